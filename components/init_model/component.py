from kfp.dsl import Model, Output


def init_model(config_json: str, model: Output[Model]):
    """The round-0 global model: seeded initial weights and a full mask."""
    import json

    from fedprune import steps
    from fedprune.config import parse_config
    from fedprune.data import load_dataset
    from fedprune.exchange import write_model

    cfg = parse_config(json.loads(config_json))
    data = load_dataset(cfg.data.dataset, None, cfg.data.train_subset, cfg.data.test_subset)
    write_model(model.path, steps.init_global(steps.new_model(cfg, data), cfg))
