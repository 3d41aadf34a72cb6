"""End to end on a real MNIST subset, through the real MLflow (SQLite) and run folder."""

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from fedprune import steps
from fedprune.cli import main
from fedprune.engine import local as engine
from fedprune.io.store import LocalBackend, RunStore, model_from_bytes


def test_server_pruning_run(make_config, mnist_small):
    cfg = make_config(
        pruning={"schedule": {"kind": "oneshot", "target": 0.8, "at_round": 2}},
    )
    result = engine.run_experiment(cfg, data=mnist_small)

    assert [m.round for m in result.history] == [1, 2, 3]
    last = result.history[-1]
    assert last.test["accuracy"] > 0.75, "far above the 10% of chance"
    assert last.sparsity == pytest.approx(0.8, abs=1e-3)
    assert result.history[0].sparsity == 0.0
    # sparse payloads: once pruned, each upload is well under half the dense one
    assert last.bytes_up < 0.5 * result.history[0].bytes_up
    # one broadcast payload, sent to each of the 4 sampled clients
    assert last.bytes_down > 0 and last.bytes_down % 4 == 0

    client = MlflowClient(cfg.tracking)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["pruning.schedule.target"] == "0.8"
    assert run.data.tags["method"] == "magnitude-server-oneshot"
    assert run.data.tags["sparsity_target"] == "80%"
    assert run.info.run_name == f"magnitude-server-80%-{result.run_id[:8]}"
    assert not [k for k in run.data.params if k.startswith(("kubeflow.", "s3."))], "no cluster"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    for metric in ("test_accuracy", "test_loss", "sparsity", "bytes_up", "bytes_down", "seconds"):
        history = client.get_metric_history(result.run_id, metric)
        assert sorted(p.step for p in history) == [1, 2, 3], metric
    total = client.get_metric_history(result.run_id, "mb_up_total")
    running = [sum(m.bytes_up for m in result.history[:r]) / 1e6 for r in (1, 2, 3)]
    assert [p.value for p in sorted(total, key=lambda p: p.step)] == pytest.approx(running)
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "model.safetensors", "metrics.json", "plots"} <= artifacts

    folder = Path(result.location)
    strict = json.loads(
        (folder / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}")
    )
    assert len(strict) == 3 and strict[0]["personal_accuracy"] is None, "valid JSON: null"
    weights, mask = model_from_bytes((folder / "model.safetensors").read_bytes())
    kept = sum(int(m.sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    assert 1 - kept / total == pytest.approx(0.8, abs=1e-3)
    assert all((weights[n][~m] == 0).all() for n, m in mask.items())
    last, _ = model_from_bytes((folder / "rounds/0003/model.safetensors").read_bytes())
    assert all(torch.equal(weights[n], last[n]) for n in last), "compact, the same model"
    stored = (folder / "model.safetensors").stat().st_size
    assert stored == pytest.approx(result.costs["stored_mb"] * 1e6)
    assert result.costs["stored_mb_dense"] / result.costs["stored_mb"] > 3, "80% sparse: small"
    assert sorted(p.name for p in (folder / "rounds").iterdir()) == ["0001", "0002", "0003"]
    assert {p.name for p in (folder / "rounds" / "0003").iterdir()} == {
        "model.safetensors",
        "updates.json",
        "metrics.json",
        "state.json",
        "manifest.json",
    }


def test_same_seed_same_numbers(make_config, mnist_small):
    cfg = make_config(rounds=2, pruning={"schedule": {"kind": "oneshot", "target": 0.5}})
    first = engine.run_experiment(cfg, data=mnist_small).history
    second = engine.run_experiment(cfg, data=mnist_small).history
    strip = [(m.test["accuracy"], m.test_loss, m.sparsity, m.bytes_up) for m in first]
    assert strip == [(m.test["accuracy"], m.test_loss, m.sparsity, m.bytes_up) for m in second]


def test_client_placement_prunes_uploads(make_config, mnist_small):
    cfg = make_config(
        rounds=2,
        data={"partition": {"kind": "dirichlet", "alpha": 0.5}},
        pruning={
            "placement": "client",
            "schedule": {"kind": "oneshot", "target": 0.9, "at_round": 2},
        },
    )
    history = engine.run_experiment(cfg, data=mnist_small).history
    # every upload is pruned to 90%; the union of four client masks is denser than any one
    assert history[0].sparsity == 0.0
    assert 0.5 < history[-1].sparsity <= 0.9
    # 10% kept at 8 bytes each (index + fp32 value) is ~20% of the dense 4 bytes per weight
    assert history[-1].bytes_up < 0.25 * history[0].bytes_up
    assert history[-1].test["accuracy"] > 0.5


def test_failed_round_keeps_last_good_model_and_resume_restores_the_strategy_state(
    make_config, mnist_small, monkeypatch
):
    """Round 2's aggregation fails: round 1 stays published, nothing of round 2 is; FedAdam's
    moments were published with round 1, so the resumed run ends with the bytes of a run
    never interrupted."""
    cfg = make_config(
        pruning={"schedule": {"kind": "oneshot", "target": 0.5}},
        aggregation={"method": "fedadam"},
    )
    real_aggregate = steps.aggregate
    calls = []

    def failing_aggregate(updates, cfg, previous, **where):
        calls.append(previous)
        if len(calls) == 2:
            raise RuntimeError("aggregation node lost")
        return real_aggregate(updates, cfg, previous, **where)

    monkeypatch.setattr(steps, "aggregate", failing_aggregate)
    with pytest.raises(RuntimeError, match="node lost"):
        engine.run_experiment(cfg, data=mnist_small)
    assert calls[1].state  # round 2 started from round 1's moments

    (run_dir,) = list((Path(cfg.store) / "test").iterdir())
    store = RunStore(LocalBackend(cfg.store), "test", run_dir.name)
    assert store.published_rounds() == [1]
    objects = store.load_round(1)
    weights, mask = model_from_bytes(objects["model.safetensors"])
    assert weights and mask
    assert json.loads(objects["metrics.json"])["round"] == 1
    assert not (run_dir / "model.safetensors").exists()
    client = MlflowClient(cfg.tracking)
    runs = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]

    monkeypatch.setattr(steps, "aggregate", real_aggregate)
    resumed = engine.run_experiment(cfg, data=mnist_small, resume=run_dir.name)
    whole = engine.run_experiment(cfg, data=mnist_small)
    for name in ("rounds/0003/model.safetensors", "model.safetensors"):
        ours = (run_dir / name).read_bytes()
        assert ours == (Path(cfg.store) / "test" / whole.run_id / name).read_bytes(), name
    assert [m.test for m in resumed.history] == [m.test for m in whole.history]


def test_cli_run_prints_table_and_summary(make_config, tmp_path, capsys):
    cfg = make_config(rounds=2, pruning={"schedule": {"kind": "oneshot", "target": 0.8}})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump()))
    assert main(["run", str(path), "--run-name", "nightly baseline"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # Not a terminal: the header once, a line per round, nothing redrawn or folded.
    headers = [line for line in lines if line.startswith("round |")]
    assert headers == ["round | acc % | loss | sparsity % | MB up | MB down | rejected | s"]
    rounds = [line.split(" | ")[0] for line in lines[lines.index(headers[0]) + 1 :][:2]]
    assert rounds == ["1", "2"]
    hint = next(line for line in lines if line.startswith("MLflow run"))
    mlflow = str(Path(sys.executable).parent / "mlflow")
    assert f"{mlflow} ui --backend-store-uri" in hint, "the command works as pasted, whole"
    assert any(line.startswith("artifacts: ") for line in lines)
    (run,) = MlflowClient(cfg.tracking).search_runs(
        [MlflowClient(cfg.tracking).get_experiment_by_name(cfg.experiment).experiment_id]
    )
    assert run.info.run_name == "nightly baseline", "--run-name is taken as given"


def test_impossible_partition_fails_before_any_run(make_config, mnist_small, tmp_path):
    from fedprune.errors import UserError

    cfg = make_config(
        data={
            "num_clients": 50,
            "partition": {"kind": "dirichlet", "alpha": 0.01, "min_samples": 100},
        }
    )
    with pytest.raises(UserError, match="min_samples"):
        engine.run_experiment(cfg, data=mnist_small)
    assert not (tmp_path / "runs" / "test").exists()


def test_resume_of_a_finished_run_exits_2_and_touches_nothing(make_config, tmp_path, capsys):
    cfg = make_config(rounds=1)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump()))
    assert main(["run", str(path)]) == 0
    (run_dir,) = list((Path(cfg.store) / "test").iterdir())
    files = sorted(p for p in Path(cfg.store).rglob("*") if p.is_file() and p.suffix != ".db")
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    capsys.readouterr()
    assert main(["run", str(path), "--resume", run_dir.name]) == 2
    assert "already finished" in capsys.readouterr().out
    after = sorted(p for p in Path(cfg.store).rglob("*") if p.is_file() and p.suffix != ".db")
    assert after == files
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in after} == before
    client = MlflowClient(cfg.tracking)
    run = client.get_run(run_dir.name)
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run_dir.name, "macs")) == 1  # costs logged once
