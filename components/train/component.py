from kfp.dsl import Artifact, Dataset, Input, Output


def train_group(
    config_json: str,
    message: Input[Artifact],
    shards: Input[Dataset],
    group: int,
    updates: Output[Artifact],
):
    """Train one group of the round's clients, one after another, in this pod."""
    import json

    from fedprune import steps
    from fedprune.config import parse_config
    from fedprune.exchange import read_broadcast, read_partition, write_updates

    cfg = parse_config(json.loads(config_json))
    received = read_broadcast(message.path)
    data = steps.load_data(cfg)
    clients = received.group(group, cfg.kubeflow.clients_per_pod)
    model = steps.new_model(cfg, data)
    method = steps.pruning_method(model, data, cfg)
    trained = steps.train_clients(
        model,
        method,
        received.payload,
        data,
        read_partition(shards.path),
        clients,
        received.round,
        cfg,
    )
    write_updates(updates.path, trained)
