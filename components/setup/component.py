def setup(config_json: str) -> str:
    """Validate the config and open the experiment's MLflow run; returns the run id."""
    import json

    from fedprune.config import parse_config
    from fedprune.tracking import open_run

    return open_run(parse_config(json.loads(config_json)), engine="kubeflow").run_id
