from kfp.dsl import Artifact, Input, Model, Output


def broadcast(config_json: str, global_model: Input[Model], round_: int, message: Output[Artifact]):
    """Sample the round's clients and encode the global model they will download."""
    import json
    import time

    from fedprune import steps
    from fedprune.config import parse_config
    from fedprune.exchange import Broadcast, read_model, write_broadcast

    started = time.time()
    cfg = parse_config(json.loads(config_json))
    payload = steps.broadcast(read_model(global_model.path), cfg)
    clients = steps.sample_clients(cfg, round_)
    write_broadcast(message.path, Broadcast(round_, clients, payload, started))
