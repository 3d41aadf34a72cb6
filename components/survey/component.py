from kfp.dsl import Artifact, Output


def survey_site(config_json: str, site: str, summary: Output[Artifact]):
    """At one site (data kept at sites): read only this site's folder and send the server its
    row count, shape and the features' moments, never a row."""
    import json
    from pathlib import Path

    from fedprune.config import parse_config
    from fedprune.steps.sites import summarize

    cfg = parse_config(json.loads(config_json))
    Path(summary.path).write_text(summarize(cfg, site).to_json())
