from kfp.dsl import Artifact, Dataset, Input, Output


def federate(config_json: str, summaries: Input[list[Artifact]], shards: Output[Dataset]):
    """On the server (data kept at sites): combine the sites' summaries with the server's
    test set into the federation (the model's shape, the features' statistics) every later
    pod builds from."""
    import json
    from pathlib import Path

    from fedprune.config import parse_config
    from fedprune.io.exchange import write_federation
    from fedprune.steps.sites import SiteSummary, federate

    cfg = parse_config(json.loads(config_json))
    received = [SiteSummary.from_json(Path(s.path).read_text()) for s in summaries]
    write_federation(shards.path, federate(cfg, received))
