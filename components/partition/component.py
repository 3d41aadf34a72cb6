from kfp.dsl import Dataset, Output


def partition(config_json: str, shards: Output[Dataset]):
    """Split the training set over the clients (seeded, so every pod sees the same split)."""
    import json

    from fedprune import steps
    from fedprune.config import parse_config
    from fedprune.io.exchange import write_partition

    cfg = parse_config(json.loads(config_json))
    write_partition(shards.path, steps.partition_data(steps.load_data(cfg), cfg))
