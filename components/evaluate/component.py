from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output


def evaluate(
    config_json: str,
    run_id: str,
    message: Input[Artifact],
    updates: Input[list[Artifact]],
    model: Input[Model],
    screening: Input[Artifact],
    shards: Input[Dataset],
    metrics: Output[Metrics],
):
    """Test the round's global model, run the callbacks, advance the clients' state and
    publish the round to the store (as the local engine does), and log it to MLflow and the
    KFP UI."""
    import json

    from fedprune.config import parse_config
    from fedprune.engine.callbacks import load_callbacks
    from fedprune.engine.round import conclude_round
    from fedprune.io.exchange import (
        pod_runtime,
        read_broadcast,
        read_model,
        read_rejections,
        read_updates,
    )
    from fedprune.io.publish import history_until, run_store
    from fedprune.io.state import ClientState
    from fedprune.tracking.runs import end_on_signals, tracker_for

    cfg = parse_config(json.loads(config_json))
    end_on_signals(cfg, run_id)  # SIGTERM: the MLflow run is marked KILLED
    plan = read_broadcast(message.path)
    rt = pod_runtime(cfg, shards.path)  # the test set, standardised by the clients' statistics
    store = run_store(cfg, run_id)
    result = conclude_round(
        rt,
        plan,
        updates=read_updates([u.path for u in updates]),
        candidate=read_model(model.path),
        state=ClientState.after(store, plan.round - 1),
        history=history_until(store, plan.round - 1),
        store=store,
        callbacks=load_callbacks(cfg.callbacks),
        rejected=read_rejections(screening.path),
    )
    tracker = tracker_for(cfg).attach(run_id)
    tracker.log_metrics(result.flat(), step=plan.round)
    if result.rejected:
        tracker.set_tag(f"rejected.round_{plan.round:04d}", json.dumps(result.rejected)[:5000])
    for name, value in result.flat().items():
        if not name.startswith("layer_sparsity."):
            metrics.log_metric(name, value)
