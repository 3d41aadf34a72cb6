from kfp.dsl import Dataset, Input, Model, Output


def init_model(
    config_json: str,
    run_id: str,
    shards: Input[Dataset],
    model: Output[Model],
    after_round: int = 0,
):
    """The round-0 global model: seeded fresh weights, or with `init_from: latest` the newest
    model a finished run of this experiment published (warm start for scheduled runs). The
    pruning method may shape it: FedDST starts sparse, PruneFL prunes after training on one
    client's shard. A warm start continues the source's round count (`rounds_before`,
    carried with the model to every round's pods). A later segment of a long experiment
    (`after_round` > 0) starts from the run's own model after that round, with the
    strategy's state."""
    import json

    from fedprune.config import parse_config
    from fedprune.engine.round import initial_model
    from fedprune.io.exchange import pod_runtime, write_model
    from fedprune.io.publish import round_model, run_store
    from fedprune.io.s3 import open_backend
    from fedprune.tracking.runs import end_on_signals, tracker_for

    cfg = parse_config(json.loads(config_json))
    end_on_signals(cfg, run_id)  # SIGTERM: the MLflow run is marked KILLED
    if after_round > 0:
        start, before = round_model(run_store(cfg, run_id), after_round)
        write_model(model.path, start, rounds_before=before)
        return
    rt = pod_runtime(cfg, shards.path)
    start, source, before = initial_model(rt, open_backend(cfg.store, cfg.s3))
    tracker = tracker_for(cfg).attach(run_id)
    tracker.set_tag("init_from", source)
    tracker.set_tag("rounds_before", str(before))
    write_model(model.path, start, rounds_before=before)
