def setup(config_json: str) -> str:
    """Validate the config, open the experiment's MLflow run and store the config beside the
    run's rounds; returns the run id."""
    import json

    import yaml

    from fedprune.config import parse_config
    from fedprune.io.publish import run_store
    from fedprune.tracking.mlflow import start_run, tracker_for

    cfg = parse_config(json.loads(config_json))
    tracker = tracker_for(cfg)
    run_id = start_run(tracker, cfg, engine="kubeflow")
    config_yaml = yaml.safe_dump(cfg.model_dump(), sort_keys=False).encode()
    run_store(cfg, run_id).write("config.yaml", config_yaml)
    tracker.log_bytes("config.yaml", config_yaml)
    return run_id
