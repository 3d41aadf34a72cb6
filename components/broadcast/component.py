from kfp.dsl import Artifact, Dataset, Input, Model, Output


def broadcast(
    config_json: str,
    run_id: str,
    global_model: Input[Model],
    shards: Input[Dataset],
    round_: int,
    message: Output[Artifact],
):
    """Sample the round's clients and encode the global model they download: the full payload,
    or its values only for clients that already hold its mask, or with LotteryFL's personal
    masks the values under each client's own mask (the clients' state, from the store)."""
    import json

    from fedprune.config import parse_config
    from fedprune.engine.round import plan_round
    from fedprune.io.exchange import pod_runtime, read_model, read_rounds_before, write_broadcast
    from fedprune.io.publish import run_store
    from fedprune.io.state import ClientState
    from fedprune.tracking.runs import end_on_signals

    cfg = parse_config(json.loads(config_json))
    end_on_signals(cfg, run_id)  # SIGTERM: the MLflow run is marked KILLED
    rt = pod_runtime(cfg, shards.path, with_data=False)
    state = ClientState.after(run_store(cfg, run_id), round_ - 1)
    before = read_rounds_before(global_model.path)  # a warm start's earlier rounds
    plan = plan_round(rt, read_model(global_model.path), state, round_=round_, rounds_before=before)
    if len(plan.clients) > cfg.most_clients_per_round():  # Poisson: p ≤ 1e-9 a round
        raise RuntimeError(
            f"round {round_} drew {len(plan.clients)} clients, more than the pipeline's client "
            f"pods hold ({cfg.most_clients_per_round()}); the round is not published: resume"
        )
    write_broadcast(message.path, plan)
