from kfp.dsl import Input, Model, Output


def finalise(config_json: str, run_id: str, model: Input[Model], final_model: Output[Model]):
    """Publish the last round's model as the run's final model and close the MLflow run."""
    import json
    import shutil

    from fedprune.config import parse_config
    from fedprune.tracking import tracker_for

    cfg = parse_config(json.loads(config_json))
    shutil.copyfile(model.path, final_model.path)
    tracker = tracker_for(cfg).attach(run_id)
    tracker.log_artifact(model.path)
    tracker.finish()
