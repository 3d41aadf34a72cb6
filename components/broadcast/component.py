from kfp.dsl import Artifact, Input, Model, Output


def broadcast(
    config_json: str,
    run_id: str,
    global_model: Input[Model],
    round_: int,
    message: Output[Artifact],
):
    """Sample the round's clients and encode the global model they download: the full payload,
    or its values only for clients that already hold its mask (known from the last round), or
    with LotteryFL's personal masks the values under each client's own mask (from the store)."""
    import json
    import time

    from fedprune import steps
    from fedprune.config import parse_config
    from fedprune.exchange import Broadcast, read_model, write_broadcast
    from fedprune.publish import held_after, personal_masks, run_store

    started = time.time()
    cfg = parse_config(json.loads(config_json))
    current = read_model(global_model.path)
    clients = steps.sample_clients(cfg, round_)
    store = run_store(cfg, run_id)
    held = held_after(store, round_ - 1)
    personal = personal_masks(store, round_ - 1, clients) if cfg.pruning.lottery.personal else {}
    sent = steps.downloads(current, steps.broadcast(current, cfg), clients, held, cfg, personal)
    held |= dict.fromkeys(clients, sent.mask_id)
    write_broadcast(message.path, Broadcast(round_, clients, sent, held, started))
