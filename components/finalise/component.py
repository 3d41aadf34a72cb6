from kfp.dsl import Input, Model, Output


def finalise(config_json: str, run_id: str, model: Input[Model], final_model: Output[Model]):
    """Publish the final model, metrics, inference costs and plots to the store and MLflow,
    close the run."""
    import json
    import shutil

    from fedprune import steps
    from fedprune.config import parse_config
    from fedprune.data import data_shape
    from fedprune.exchange import read_model
    from fedprune.publish import (
        finish,
        history_until,
        personal_after,
        personal_masks,
        run_store,
    )
    from fedprune.tracking import tracker_for

    cfg = parse_config(json.loads(config_json))
    shutil.copyfile(model.path, final_model.path)
    store = run_store(cfg, run_id)
    tracker = tracker_for(cfg).attach(run_id)
    final = read_model(model.path)
    shape = data_shape(cfg.data.dataset)  # the method needs the model, not the data
    method = steps.pruning_method(steps.new_model(cfg, shape), shape, cfg)
    personal = (
        personal_masks(store, cfg.rounds, list(personal_after(store, cfg.rounds)))
        if method.personal
        else {}
    )
    costs = method.costs(final.weights, final.mask, personal.values())
    finish(store, tracker, final, history_until(store, cfg.rounds), costs, cfg)
    tracker.finish()
