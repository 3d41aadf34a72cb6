from kfp.dsl import Artifact, Dataset, Input, Model, Output


def aggregate(
    config_json: str,
    message: Input[Artifact],
    updates: Input[list[Artifact]],
    global_model: Input[Model],
    shards: Input[Dataset],
    model: Output[Model],
    screening: Output[Artifact],
):
    """Screen the round's updates (the rejected ones and why go to `screening`), aggregate
    the rest (on the GPU with `kubeflow.aggregator.device: gpu`, failing first thing without
    one) from `global_model`, the model the clients started from with the strategy's state,
    then let the pruning method choose the next global mask."""
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
        write_rejections,
    )

    cfg = parse_config(json.loads(config_json))
    device = cfg.kubeflow.aggregator.device.replace("gpu", "cuda")
    if device == "cuda" and not torch.cuda.is_available():  # never a silent CPU run
        raise RuntimeError(
            "kubeflow.aggregator.device is gpu but this pod sees no GPU (torch "
            f"{torch.__version__}, CUDA build: {torch.version.cuda is not None}): run the CUDA "
            "image on a GPU node, or set kubeflow.aggregator.device: cpu"
        )
    broadcast = read_broadcast(message.path)
    received = read_updates([u.path for u in updates])
    previous = read_model(global_model.path)
    rt = pod_runtime(cfg, shards.path, with_data=False)  # the model and the rows each holds
    rejected = steps.screen(received, previous, cfg, rt.held_rows)
    kept = steps.accepted(received, rejected)
    combined = steps.aggregate(kept, cfg, previous, device).model
    chosen = steps.server_prune(
        combined, kept, rt.method, round_=broadcast.model_round, broadcast=broadcast.payload
    )
    write_model(model.path, chosen, rounds_before=broadcast.rounds_before)
    write_rejections(screening.path, rejected)
