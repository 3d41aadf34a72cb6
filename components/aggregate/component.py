from kfp.dsl import Artifact, Dataset, Input, Model, Output


def aggregate(
    config_json: str,
    message: Input[Artifact],
    updates: Input[list[Artifact]],
    global_model: Input[Model],
    shards: Input[Dataset],
    model: Output[Model],
):
    """Aggregate the round's updates (on the GPU when the pod has one) from `global_model`,
    the model the clients started from with the strategy's state, then let the pruning
    method choose the next global mask."""
    import json

    import torch

    from fedprune import steps
    from fedprune.config import parse_config
    from fedprune.io.exchange import (
        pod_runtime,
        read_broadcast,
        read_model,
        read_updates,
        write_model,
    )

    cfg = parse_config(json.loads(config_json))
    broadcast = read_broadcast(message.path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    received = read_updates([u.path for u in updates])
    combined = steps.aggregate(received, cfg, read_model(global_model.path), device)
    rt = pod_runtime(cfg, shards.path, with_data=False)  # the method needs the model, not the data
    chosen = steps.server_prune(
        combined, received, rt.method, round_=broadcast.round, broadcast=broadcast.payload
    )
    write_model(model.path, chosen)
