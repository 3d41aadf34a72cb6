def setup(
    config_json: str, compiled_shape: str, first_round: int = 1, continue_run: str = ""
) -> str:
    """Validate the config (refusing one that changes what the pipeline was compiled with:
    rounds, client groups, pod settings), open the experiment's MLflow run and store the
    config beside the run's rounds; returns the run id. A pipeline that starts at a later
    round (a segment of a long experiment) continues `continue_run` instead: the same
    config, unfinished, its last published round the one before `first_round`."""
    import json

    import yaml

    from fedprune.config import ConfigError, parse_config
    from fedprune.config.kubeflow import check_dag_shape
    from fedprune.engine.round import resume_state
    from fedprune.io.publish import run_store
    from fedprune.tracking.runs import start_run, tracker_for

    cfg = parse_config(json.loads(config_json))
    check_dag_shape(cfg, json.loads(compiled_shape))
    tracker = tracker_for(cfg)
    if first_round > 1:
        if not continue_run:
            raise ConfigError(
                f"this pipeline runs rounds {first_round}… of a longer experiment: pass "
                "continue_run, the run its earlier rounds belong to (fedprune submit --continue)"
            )
        _, history, _ = resume_state(run_store(cfg, continue_run), cfg)
        if len(history) != first_round - 1:
            raise ConfigError(
                f"continue_run {continue_run} has published {len(history)} rounds; this "
                f"pipeline starts at round {first_round}: submit with --continue to compile "
                "the segment that follows it"
            )
        tracker.reopen(continue_run)
        return continue_run
    run_id = start_run(tracker, cfg, engine="kubeflow")
    config_yaml = yaml.safe_dump(cfg.model_dump(), sort_keys=False).encode()
    run_store(cfg, run_id).write("config.yaml", config_yaml)
    tracker.log_bytes("config.yaml", config_yaml)
    return run_id
