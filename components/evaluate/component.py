from kfp.dsl import Artifact, Input, Metrics, Model, Output


def evaluate(
    config_json: str,
    run_id: str,
    message: Input[Artifact],
    updates: Input[list[Artifact]],
    model: Input[Model],
    metrics: Output[Metrics],
):
    """Test the round's global model, publish the round to the store (as the local engine
    does), and log it to MLflow and the KFP UI."""
    import json
    import time

    from fedprune import steps
    from fedprune.config import parse_config
    from fedprune.exchange import read_broadcast, read_model, read_updates
    from fedprune.publish import history_until, personal_after, round_objects, run_store
    from fedprune.tracking import tracker_for

    cfg = parse_config(json.loads(config_json))
    received = read_broadcast(message.path)
    data = steps.load_data(cfg)
    global_model = read_model(model.path)
    clients = read_updates([u.path for u in updates])
    method = steps.pruning_method(steps.new_model(cfg, data), data, cfg)
    result = steps.round_metrics(
        received.round,
        global_model,
        method,
        data,
        clients,
        received.sent,
        time.time() - received.started,
        cfg,
    )
    store = run_store(cfg, run_id)
    history = [*history_until(store, received.round - 1), result]
    index = None
    if method.personal:  # each trained client's personal model now lives in this round
        index = personal_after(store, received.round - 1)
        index |= dict.fromkeys((u.client for u in clients), received.round)
    objects = round_objects(global_model, clients, history, received.held, index)
    store.publish_round(received.round, objects)
    tracker_for(cfg).attach(run_id).log_metrics(result.flat(), step=received.round)
    for name, value in result.flat().items():
        if not name.startswith("layer_sparsity."):
            metrics.log_metric(name, value)
