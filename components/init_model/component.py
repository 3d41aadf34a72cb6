from kfp.dsl import Model, Output


def init_model(config_json: str, run_id: str, model: Output[Model]):
    """The round-0 global model: seeded fresh weights, or with `init_from: latest` the newest
    model this experiment published (warm start for scheduled runs)."""
    import json

    from fedprune import steps
    from fedprune.config import parse_config
    from fedprune.exchange import write_model
    from fedprune.publish import initial_model
    from fedprune.store import open_backend
    from fedprune.tracking import tracker_for

    cfg = parse_config(json.loads(config_json))
    data = steps.load_data(cfg)
    start, source = initial_model(open_backend(cfg.store, cfg.s3), steps.new_model(cfg, data), cfg)
    tracker_for(cfg).attach(run_id).set_tag("init_from", source)
    write_model(model.path, start)
