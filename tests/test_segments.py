"""A long experiment as a chain of KFP runs (segments): what compiles into each, and that the
chain gives the local engine's run byte for byte (the components called in order, as the
pipeline's pods would, across the segment boundary)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from mlflow.tracking import MlflowClient

from components.aggregate.component import aggregate
from components.broadcast.component import broadcast
from components.evaluate.component import evaluate
from components.finalise.component import finalise
from components.init_model.component import init_model
from components.partition.component import partition
from components.setup.component import setup
from components.train.component import train_group
from fedprune.config import ConfigError, parse_config
from fedprune.config.kubeflow import dag_shape
from fedprune.engine import local as engine
from fedprune.io.store import LocalBackend, RunStore
from pipelines.federated_pruning import compile_pipeline, group_count, segments

IMAGE = "registry.example.com/fedprune:0.1.0"
LONG = {"rounds": 50, "data": {"num_clients": 100}}


def _artifact(path: Path) -> SimpleNamespace:
    return SimpleNamespace(path=str(path))


def test_a_long_experiment_compiles_into_segments_each_under_the_budget(tmp_path):
    cfg = parse_config({**LONG, "kubeflow": {"image": IMAGE, "clients_per_pod": 10}})
    spans = segments(cfg)
    assert spans[0][0] == 1 and spans[-1][1] == 50 and len(spans) > 1
    assert all(b[0] == a[1] + 1 for a, b in zip(spans, spans[1:], strict=False)), "contiguous"
    for first, last in spans:
        path = compile_pipeline(cfg, tmp_path / f"{first}.yaml", segment=(first, last))
        assert path.stat().st_size <= cfg.kubeflow.max_spec_kb * 1000
        spec = next(yaml.safe_load_all(path.read_text()))
        tasks = spec["root"]["dag"]["tasks"]
        rounds = [
            t for t in tasks.values() if t["componentRef"]["name"].startswith("comp-fl-round")
        ]
        assert len(rounds) == last - first + 1 and group_count(cfg) == 10
        assert ("finalise" in tasks) == (last == 50), "only the last segment finalises"
        setup_args = tasks["setup"]["inputs"]["parameters"]
        assert setup_args["first_round"]["runtimeValue"]["constant"] == first
        assert setup_args["continue_run"]["componentInputParameter"] == "continue_run"
        init_args = tasks["init-model"]["inputs"]["parameters"]
        assert init_args["after_round"]["runtimeValue"]["constant"] == first - 1


def test_an_explicit_segment_too_large_is_refused_with_what_fits(tmp_path):
    kubeflow = {"image": IMAGE, "clients_per_pod": 10, "rounds_per_run": 40}
    cfg = parse_config({**LONG, "kubeflow": kubeflow})
    with pytest.raises(ConfigError, match=r"kubeflow.rounds_per_run: 40 rounds .* at most (\d+)"):
        compile_pipeline(cfg, tmp_path / "p.yaml")
    assert not (tmp_path / "p.yaml").exists()


def _round(cfg, config_json: str, run_id: str, current, shards, round_: int, tmp_path: Path):
    """One round as its pods run it; returns the new global model's artifact."""
    message = _artifact(tmp_path / f"message-{round_}")
    broadcast(config_json, run_id, current, shards, round_, message)
    groups = [_artifact(tmp_path / f"updates-{round_}-{g}") for g in range(group_count(cfg))]
    for group, updates in enumerate(groups):
        train_group(config_json, run_id, message, shards, group, "", updates)
    new = _artifact(tmp_path / f"model-{round_}")
    screening = _artifact(tmp_path / f"screening-{round_}")
    aggregate(config_json, message, groups, current, shards, new, screening)
    metrics = SimpleNamespace(log_metric=lambda *_: None)
    evaluate(config_json, run_id, message, groups, new, screening, shards, metrics)
    return new


def test_a_chain_of_segments_gives_the_local_engines_run(make_config, mnist_small, tmp_path):
    """Rounds 1-2, then 3-4 continuing the same store run and MLflow run: FedAdam's moments,
    the gradual schedule and the clients' state carry across the boundary."""
    cfg = make_config(
        rounds=4,
        aggregation={"method": "fedadam"},
        pruning={"schedule": {"kind": "gradual", "target": 0.8, "start_round": 1, "end_round": 4}},
        kubeflow={"clients_per_pod": 2, "rounds_per_run": 2},
    )
    local = engine.run_experiment(cfg, data=mnist_small)
    config_json, shape = cfg.model_dump_json(), json.dumps(dag_shape(cfg))
    shards = _artifact(tmp_path / "shards.json")

    run_id = setup(config_json, shape)
    partition(config_json, shards)
    current = _artifact(tmp_path / "model-0")
    init_model(config_json, run_id, shards, current)
    for round_ in (1, 2):
        current = _round(cfg, config_json, run_id, current, shards, round_, tmp_path)

    # the next KFP run: a fresh pod tree that knows only the run id
    with pytest.raises(
        ConfigError, match="has published 2 rounds; this pipeline starts at round 4"
    ):
        setup(config_json, shape, first_round=4, continue_run=run_id)
    assert setup(config_json, shape, first_round=3, continue_run=run_id) == run_id
    later = tmp_path / "segment-2"
    later.mkdir()
    shards = _artifact(later / "shards.json")
    partition(config_json, shards)
    current = _artifact(later / "model-2")
    init_model(config_json, run_id, shards, current, after_round=2)
    for round_ in (3, 4):
        current = _round(cfg, config_json, run_id, current, shards, round_, later)
    finalise(config_json, run_id, current, shards, _artifact(later / "final"))

    pods = RunStore(LocalBackend(cfg.store), cfg.experiment, run_id)
    ours = RunStore(LocalBackend(cfg.store), cfg.experiment, local.run_id)
    for round_ in range(1, 5):
        names = ["model.safetensors", "state.json"]
        assert pods.load_round(round_, names) == ours.load_round(round_, names), round_
    assert pods.load("", ["model.safetensors"]) == ours.load("", ["model.safetensors"])
    client = MlflowClient(cfg.tracking)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run_id, "test_accuracy")
    assert [m.step for m in history] == [1, 2, 3, 4], "one MLflow run across both segments"
    assert [m.value for m in history] == [m.test["accuracy"] for m in local.history]


def test_a_warm_started_pipeline_run_continues_as_the_local_engine_does(
    make_config, mnist_small, tmp_path
):
    """`init_from: latest` in the pods: the round count the model carries reaches every
    round's pods (sampling as rounds 3-4, seeds, the schedule), byte for byte as locally."""
    cfg = make_config(
        rounds=2,
        init_from="latest",
        sampling={"count": 2},
        pruning={"schedule": {"kind": "iterative", "target": 0.8, "every": 1, "rate": 0.6}},
        kubeflow={"clients_per_pod": 1},
    )
    engine.run_experiment(cfg, data=mnist_small)  # the finished run both start from
    config_json = cfg.model_dump_json()
    run_id = setup(config_json, json.dumps(dag_shape(cfg)))
    shards = _artifact(tmp_path / "shards.json")
    partition(config_json, shards)
    current = _artifact(tmp_path / "model-0")
    init_model(config_json, run_id, shards, current)  # picks the source before the next exists
    local = engine.run_experiment(cfg, data=mnist_small)
    for round_ in (1, 2):
        current = _round(cfg, config_json, run_id, current, shards, round_, tmp_path)
    pods = RunStore(LocalBackend(cfg.store), cfg.experiment, run_id)
    ours = RunStore(LocalBackend(cfg.store), cfg.experiment, local.run_id)
    for round_ in (1, 2):
        names = ["model.safetensors", "updates.json", "state.json"]
        assert pods.load_round(round_, names) == ours.load_round(round_, names), round_
    tags = MlflowClient(cfg.tracking).get_run(run_id).data.tags
    assert tags["rounds_before"] == "2"


def test_compile_writes_every_segment(tmp_path, capsys):
    from fedprune.cli import main

    raw = {**LONG, "kubeflow": {"image": IMAGE, "clients_per_pod": 10, "rounds_per_run": 14}}
    raw |= {"store": "s3://fedprune/runs", "s3": {"endpoint": "minio:9000"},
            "tracking": "http://mlflow:5000"}  # fmt: skip
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["compile", str(config), "-o", str(tmp_path / "long-pipeline.yaml")]) == 0
    written = sorted(p.name for p in tmp_path.glob("long-pipeline*.yaml"))
    assert written == [
        "long-pipeline-rounds-001-014.yaml",
        "long-pipeline-rounds-015-028.yaml",
        "long-pipeline-rounds-029-042.yaml",
        "long-pipeline-rounds-043-050.yaml",
    ]
    assert "in 4 runs" in " ".join(capsys.readouterr().out.split())
