from kfp.dsl import Dataset, Input, Model, Output


def finalise(
    config_json: str,
    run_id: str,
    model: Input[Model],
    shards: Input[Dataset],
    final_model: Output[Model],
):
    """Publish the final model, metrics, inference costs and plots to the store and MLflow,
    close the run."""
    import json
    import shutil

    from fedprune.config import parse_config
    from fedprune.engine.round import final_costs, finish
    from fedprune.io.exchange import pod_runtime, read_model
    from fedprune.io.publish import history_until, run_store
    from fedprune.io.state import ClientState
    from fedprune.tracking.runs import end_on_signals, tracker_for

    cfg = parse_config(json.loads(config_json))
    end_on_signals(cfg, run_id)  # SIGTERM: the MLflow run is marked KILLED
    shutil.copyfile(model.path, final_model.path)
    store = run_store(cfg, run_id)
    tracker = tracker_for(cfg).attach(run_id)
    final = read_model(model.path)
    rt = pod_runtime(cfg, shards.path)  # the logged model standardises as training did
    costs = final_costs(rt, final, ClientState.after(store, cfg.rounds))
    history = history_until(store, cfg.rounds)
    finish(rt, store, tracker, global_model=final, history=history, costs=costs)
    tracker.finish()
