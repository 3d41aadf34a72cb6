def setup(config_json: str, compiled_shape: str) -> str:
    """Validate the config (refusing one that changes what the pipeline was compiled with:
    rounds, client groups, pod settings), open the experiment's MLflow run and store the
    config beside the run's rounds; returns the run id."""
    import json

    import yaml

    from fedprune.config import parse_config
    from fedprune.config.kubeflow import check_dag_shape
    from fedprune.io.publish import run_store
    from fedprune.tracking.runs import start_run, tracker_for

    cfg = parse_config(json.loads(config_json))
    check_dag_shape(cfg, json.loads(compiled_shape))
    tracker = tracker_for(cfg)
    run_id = start_run(tracker, cfg, engine="kubeflow")
    config_yaml = yaml.safe_dump(cfg.model_dump(), sort_keys=False).encode()
    run_store(cfg, run_id).write("config.yaml", config_yaml)
    tracker.log_bytes("config.yaml", config_yaml)
    return run_id
