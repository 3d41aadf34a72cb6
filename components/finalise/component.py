from kfp.dsl import Input, Model, Output


def finalise(config_json: str, run_id: str, model: Input[Model], final_model: Output[Model]):
    """Publish the last round's model as the run's final model and close the MLflow run."""
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from fedprune.config import parse_config
    from fedprune.tracking import tracker_for

    cfg = parse_config(json.loads(config_json))
    shutil.copyfile(model.path, final_model.path)
    tracker = tracker_for(cfg).attach(run_id)
    with tempfile.TemporaryDirectory() as folder:
        named = Path(folder) / "model.safetensors"  # the name the local engine's runs use
        shutil.copyfile(model.path, named)
        tracker.log_artifact(named)
    tracker.finish()
