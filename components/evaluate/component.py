from kfp.dsl import Artifact, Input, Metrics, Model, Output


def evaluate(
    config_json: str,
    run_id: str,
    message: Input[Artifact],
    updates: Input[list[Artifact]],
    model: Input[Model],
    metrics: Output[Metrics],
):
    """Test the round's global model, run the callbacks, advance the clients' state and
    publish the round to the store (as the local engine does), and log it to MLflow and the
    KFP UI."""
    import json

    from fedprune import steps
    from fedprune.config import parse_config
    from fedprune.engine.callbacks import load_callbacks
    from fedprune.engine.round import conclude_round
    from fedprune.io.exchange import read_broadcast, read_model, read_updates
    from fedprune.io.publish import history_until, run_store
    from fedprune.io.state import ClientState
    from fedprune.tracking.runs import tracker_for

    cfg = parse_config(json.loads(config_json))
    plan = read_broadcast(message.path)
    rt = steps.Runtime.build(cfg)  # the split too: standardisation uses the clients' statistics
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
    )
    tracker_for(cfg).attach(run_id).log_metrics(result.flat(), step=plan.round)
    for name, value in result.flat().items():
        if not name.startswith("layer_sparsity."):
            metrics.log_metric(name, value)
