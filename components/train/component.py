from kfp.dsl import Artifact, Dataset, Input, Output


def train_group(
    config_json: str,
    run_id: str,
    message: Input[Artifact],
    shards: Input[Dataset],
    group: int,
    updates: Output[Artifact],
):
    """Train one group of the round's clients, one after another, in this pod (with
    LotteryFL's personal masks, each client's own mask comes from the run's store)."""
    import json

    from fedprune import steps
    from fedprune.config import parse_config
    from fedprune.exchange import read_broadcast, read_partition, write_updates
    from fedprune.publish import personal_masks, run_store

    cfg = parse_config(json.loads(config_json))
    received = read_broadcast(message.path)
    data = steps.load_data(cfg)
    clients = received.group(group, cfg.kubeflow.clients_per_pod)
    model = steps.new_model(cfg, data)
    method = steps.pruning_method(model, data, cfg)
    personal = (
        steps.personal_starts(
            personal_masks(run_store(cfg, run_id), received.round - 1, clients), received.sent
        )
        if method.personal
        else None
    )
    trained = steps.train_clients(
        model,
        method,
        received.payload,
        data,
        read_partition(shards.path),
        clients,
        received.round,
        cfg,
        personal,
    )
    write_updates(updates.path, trained)
