from kfp.dsl import Artifact, Input, Metrics, Model, Output


def evaluate(
    config_json: str,
    run_id: str,
    message: Input[Artifact],
    updates: Input[list[Artifact]],
    model: Input[Model],
    metrics: Output[Metrics],
):
    """Test the round's global model; log the round to MLflow and to the KFP UI."""
    import json
    import time

    from fedprune import steps
    from fedprune.config import parse_config
    from fedprune.data import load_dataset
    from fedprune.exchange import read_broadcast, read_model, read_updates
    from fedprune.tracking import tracker_for

    cfg = parse_config(json.loads(config_json))
    received = read_broadcast(message.path)
    data = load_dataset(cfg.data.dataset, None, cfg.data.train_subset, cfg.data.test_subset)
    result = steps.round_metrics(
        received.round,
        read_model(model.path),
        steps.new_model(cfg, data),
        data,
        read_updates([u.path for u in updates]),
        len(received.payload) * len(received.clients),
        time.time() - received.started,
        cfg,
    )
    tracker_for(cfg).attach(run_id).log_metrics(result.flat(), step=received.round)
    for name, value in result.flat().items():
        if not name.startswith("layer_sparsity."):
            metrics.log_metric(name, value)
