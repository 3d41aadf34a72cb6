"""Every shipped config parses and compiles to a pipeline (what `fedprune compile` does): its
first two rounds, since every round's part of the DAG is the same (a whole 50-round config
takes ~15 s to compile; tests/test_segments.py compiles whole experiments)."""

from pathlib import Path

import pytest

from fedprune.config import load_config
from pipelines.federated_pruning import compile_pipeline

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_compiles(path, tmp_path):
    cfg = load_config(path)
    cfg = cfg.model_copy(
        update={"kubeflow": cfg.kubeflow.model_copy(update={"image": "registry.test/fedprune:1"})}
    )
    compiled = compile_pipeline(
        cfg, tmp_path / f"{path.stem}.yaml", segment=(1, min(2, cfg.rounds))
    )
    assert compiled.stat().st_size > 0 and cfg.experiment in compiled.read_text()
