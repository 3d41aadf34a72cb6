"""The S3 store and MLflow server tracking against real servers (tests/services.py):
publishing, checksums, kill-and-resume, clear errors, retries and `fedprune compare`."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from fedprune.cli import main
from fedprune.config import ExperimentConfig, S3Config, parse_config
from fedprune.engine import local as engine
from fedprune.io.s3 import open_backend
from fedprune.io.store import (
    CorruptObject,
    LocalBackend,
    RunStore,
    StoreError,
    model_bytes,
    model_from_bytes,
)
from fedprune.records import RoundMetrics
from fedprune.tasks.datasets import FederatedData, load_dataset
from fedprune.tracking.mlflow import Tracker, TrackingError
from tests.services import ACCESS_KEY, SECRET_KEY, SeaweedFS, free_ports

TRAIN, TEST = 2000, 500
# Results that must match exactly between runs; `seconds` is wall time and never does.
EXACT = ("test_accuracy", "test_loss", "train_loss", "sparsity", "nonzero_params", "bytes_up")


@pytest.fixture(scope="module")
def mnist_tiny() -> FederatedData:
    return load_dataset("mnist", train_subset=TRAIN, test_subset=TEST)


def tiny_config(store: str, tracking: str, endpoint: str, **overrides: object) -> ExperimentConfig:
    """Rounds of a few hundred ms: 4 clients on 2,000 MNIST images, a 32-wide MLP."""
    raw: dict = {
        "experiment": f"svc-{uuid.uuid4().hex[:8]}",
        "rounds": 4,
        "data": {"num_clients": 4, "train_subset": TRAIN, "test_subset": TEST},
        "model": {"hidden": 32},
        "client": {"epochs": 2, "batch_size": 32, "lr": 0.05},
        "pruning": {"schedule": {"kind": "oneshot", "target": 0.8, "at_round": 2}},
        "store": store,
        "s3": {"endpoint": endpoint, "secure": False, "retries": 5},
        "tracking": tracking,
    }
    raw.update(overrides)
    return parse_config(raw)


def exact(history: list) -> list[tuple]:
    return [tuple(m.flat()[k] for k in EXACT) for m in history]


@pytest.fixture(scope="module")
def reference(s3_server, mlflow_server, mnist_tiny, tmp_path_factory):
    """One uninterrupted run on S3 + the MLflow server; the kill/resume test must match it."""
    cfg = tiny_config("s3://fedprune/e2e", mlflow_server.uri, s3_server.endpoint)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FEDPRUNE_S3_ACCESS_KEY", ACCESS_KEY)
        env.setenv("FEDPRUNE_S3_SECRET_KEY", SECRET_KEY)
        return cfg, engine.run_experiment(cfg, data=mnist_tiny)


def test_s3_and_mlflow_server_end_to_end(reference, s3_server, mlflow_server, s3_env):
    cfg, result = reference
    assert result.location == f"s3://fedprune/e2e/{cfg.experiment}/{result.run_id}"
    keys = {
        o.object_name for o in s3_server.client().list_objects("fedprune", "e2e/", recursive=True)
    }
    prefix = f"e2e/{cfg.experiment}/{result.run_id}"
    for round_ in range(1, cfg.rounds + 1):
        for name in ("model.safetensors", "updates.json", "metrics.json", "manifest.json"):
            assert f"{prefix}/rounds/{round_:04d}/{name}" in keys
    assert {
        f"{prefix}/config.yaml",
        f"{prefix}/model.safetensors",
        f"{prefix}/manifest.json",
    } <= keys

    store = RunStore(open_backend(cfg.store, cfg.s3), cfg.experiment, result.run_id)
    assert store.published_rounds() == [1, 2, 3, 4] and store.finished()
    for round_ in store.published_rounds():  # every load verifies every sha256
        objects = store.load_round(round_)
        assert json.loads(objects["metrics.json"])["round"] == round_  # its own round only
        assert len(json.loads(objects["updates.json"])) == 4
    weights, mask = model_from_bytes(store.load("")["model.safetensors"])
    assert all((weights[n][~m] == 0).all() for n, m in mask.items())

    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["method"] == "magnitude-server-oneshot"
    for metric in ("test_accuracy", "bytes_up", "sparsity"):
        assert sorted(p.step for p in client.get_metric_history(result.run_id, metric)) == [
            1,
            2,
            3,
            4,
        ]
    assert {"config.yaml", "model.safetensors", "metrics.json", "plots"} <= {
        a.path for a in client.list_artifacts(result.run_id)
    }
    # the server proxied those artifacts into its own bucket on the same S3
    proxied = [
        o.object_name
        for o in s3_server.client().list_objects("mlflow", "artifacts/", recursive=True)
        if result.run_id in o.object_name
    ]
    assert any(name.endswith("model.safetensors") for name in proxied)


def test_sigkill_in_round_3_then_resume_matches_uninterrupted(
    reference, s3_server, mlflow_server, s3_env, tmp_path
):
    cfg, uninterrupted = reference
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump()))
    child = subprocess.Popen(
        [str(Path(sys.executable).parent / "fedprune"), "run", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = s3_server.client()
    round_2 = re.compile(rf"^e2e/{cfg.experiment}/(\w+)/rounds/0002/manifest.json$")
    run_id = None
    deadline = time.monotonic() + 240
    while run_id is None and time.monotonic() < deadline and child.poll() is None:
        for obj in client.list_objects("fedprune", f"e2e/{cfg.experiment}/", recursive=True):
            if (found := round_2.match(obj.object_name)) and found[1] != uninterrupted.run_id:
                run_id = found[1]
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert run_id is not None, "round 2 was never published"

    store = RunStore(open_backend(cfg.store, cfg.s3), cfg.experiment, run_id)
    assert store.published_rounds() == [1, 2], "killed during round 3"
    assert MlflowClient(mlflow_server.uri).get_run(run_id).info.status == "RUNNING"

    assert main(["run", str(path), "--resume", run_id]) == 0

    resumed = json.loads(store.load("")["metrics.json"])
    assert exact([RoundMetrics.from_json(m) for m in resumed]) == exact(uninterrupted.history)
    mlflow = MlflowClient(mlflow_server.uri)
    assert mlflow.get_run(run_id).info.status == "FINISHED"
    steps = [p.step for p in mlflow.get_metric_history(run_id, "test_accuracy")]
    assert sorted(steps) == [1, 2, 3, 4], "one point per round, none twice"
    assert main(["run", str(path), "--resume", run_id]) == 2  # finished: nothing to resume


def synthetic_round(store: RunStore, round_: int) -> bytes:
    weights = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4) * round_}
    data = model_bytes(weights, {"w": weights["w"] > 3})
    store.publish_round(round_, {"model.safetensors": data, "metrics.json": b"[]"})
    return data


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_corrupted_object_is_detected_and_other_rounds_stay_good(
    backend, s3_server, s3_env, tmp_path
):
    if backend == "local":
        store = RunStore(LocalBackend(tmp_path), "exp", "run1")
    else:
        cfg = S3Config(endpoint=s3_server.endpoint, secure=False)
        store = RunStore(open_backend("s3://fedprune/corrupt", cfg), "exp", uuid.uuid4().hex)
    good = synthetic_round(store, 1)
    original = synthetic_round(store, 2)
    flipped = bytearray(original)
    flipped[-5] ^= 0xFF  # a tensor byte: still valid safetensors, wrong numbers
    store.write("rounds/0002/model.safetensors", bytes(flipped))

    with pytest.raises(CorruptObject, match=r"rounds/0002/model.safetensors is corrupt: sha256"):
        store.load_round(2)
    assert store.load_round(1)["model.safetensors"] == good
    # an unpublished round (objects written, no manifest yet) is not trusted
    store.write("rounds/0003/model.safetensors", original)
    assert store.published_rounds() == [1, 2]


def test_wrong_credentials_missing_bucket_and_missing_env_are_clear(
    s3_server, s3_env, monkeypatch, tmp_path, capsys
):
    cfg = S3Config(endpoint=s3_server.endpoint, secure=False, retries=1)
    with pytest.raises(StoreError, match="bucket 'no-such-bucket' does not exist"):
        open_backend("s3://no-such-bucket/x", cfg)

    monkeypatch.setenv("FEDPRUNE_S3_SECRET_KEY", "not-the-secret")
    with pytest.raises(StoreError, match=r"rejected the credentials .*FEDPRUNE_S3_SECRET_KEY"):
        open_backend("s3://fedprune/x", cfg)
    run_cfg = tiny_config(
        "s3://fedprune/bad-creds",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        s3_server.endpoint,
        data={"num_clients": 4, "train_subset": 200, "test_subset": 100},
    )
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_cfg.model_dump()))
    assert main(["run", str(path)]) == 2
    assert "rejected the credentials" in capsys.readouterr().out
    assert not (tmp_path / "mlflow.db").exists(), "fails before any MLflow run starts"

    monkeypatch.delenv("FEDPRUNE_S3_ACCESS_KEY")
    with pytest.raises(StoreError, match="set FEDPRUNE_S3_ACCESS_KEY"):
        open_backend("s3://fedprune/x", cfg)


def test_stopped_mlflow_server_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    (port,) = free_ports(1)
    with pytest.raises(TrackingError, match=rf"127.0.0.1:{port} failed: .*server is running"):
        Tracker(f"http://127.0.0.1:{port}", "x", tmp_path)


class StopServerAfterRound1(engine.Progress):
    def __init__(self, server: SeaweedFS):
        self.server = server

    def round_done(self, metrics) -> None:
        if metrics.round == 1:
            self.server.stop()


def test_s3_stopping_mid_run_keeps_published_rounds_and_resume_finishes(
    s3_env, mnist_tiny, tmp_path
):
    """S3 dies after round 1: round 2 fails clearly, round 1 survives; once S3 is back (same
    data folder and ports) the run resumes from round 1 and finishes."""
    server = SeaweedFS(tmp_path / "weed").start()
    try:
        cfg = tiny_config(
            "s3://fedprune/outage",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            server.endpoint,
            s3={"endpoint": server.endpoint, "secure": False, "retries": 2, "backoff_s": 0.1},
        )
        with pytest.raises(StoreError, match=r"unreachable while writing .*check `s3.endpoint`"):
            engine.run_experiment(cfg, data=mnist_tiny, progress=StopServerAfterRound1(server))
        (run,) = MlflowClient(cfg.tracking).search_runs(
            [MlflowClient(cfg.tracking).get_experiment_by_name(cfg.experiment).experiment_id]
        )
        assert run.info.status == "FAILED"

        server.start()
        store = RunStore(open_backend(cfg.store, cfg.s3), cfg.experiment, run.info.run_id)
        assert store.published_rounds() == [1]
        assert json.loads(store.load_round(1)["metrics.json"])["round"] == 1

        result = engine.run_experiment(cfg, data=mnist_tiny, resume=run.info.run_id)
        assert [m.round for m in result.history] == [1, 2, 3, 4]
        assert store.finished()
    finally:
        server.stop()


def test_transient_outage_is_retried(s3_env, tmp_path):
    """The server is down when the call starts and back 1 s later: the retries ride it out."""
    server = SeaweedFS(tmp_path / "weed").start()
    try:
        cfg = S3Config(endpoint=server.endpoint, secure=False, retries=5, backoff_s=0.2)
        store = RunStore(open_backend("s3://fedprune/flaky", cfg), "exp", "run")
        server.stop()
        restart = threading.Timer(0.5, server.start)
        restart.start()
        store.write("config.yaml", b"seed: 0\n")
        restart.join()
        assert store.read("config.yaml") == b"seed: 0\n"
    finally:
        server.stop()


def test_compare_orders_dense_50_and_90_percent(
    s3_server, mlflow_server, mnist_tiny, s3_env, tmp_path, capsys, monkeypatch
):
    (tmp_path / "elsewhere").mkdir()
    experiment = f"compare-{uuid.uuid4().hex[:8]}"
    runs = {}
    for label, pruning in (
        ("dense", {"schedule": {"kind": "none"}}),
        ("50", {"schedule": {"kind": "oneshot", "target": 0.5, "at_round": 1}}),
        ("90", {"schedule": {"kind": "oneshot", "target": 0.9, "at_round": 1}}),
    ):
        cfg = tiny_config(
            "s3://fedprune/compare",
            mlflow_server.uri,
            s3_server.endpoint,
            experiment=experiment,
            rounds=2,
            pruning=pruning,
        )
        runs[label] = engine.run_experiment(cfg, data=mnist_tiny)

    plot = tmp_path / "compare.png"
    argv = ["compare", "--experiment", experiment, "--tracking", mlflow_server.uri]
    assert main([*argv, "--plot", str(plot), "--target", "0.5"]) == 0
    out = capsys.readouterr().out
    ids = {r.run_id[:8] for r in runs.values()}
    rows = [
        [cell for cell in line.split() if cell != "│"]
        for line in out.splitlines()
        if line.split() and line.split()[0] in ids
    ]
    assert len(rows) == 3
    by_final = sorted(runs, key=lambda k: -runs[k].history[-1].test["accuracy"])
    targets = {"dense": "-", "50": "50%", "90": "90%"}
    assert [row[2] for row in rows] == [targets[k] for k in by_final]
    for row in rows:
        label = next(k for k, v in targets.items() if v == row[2])
        history = runs[label].history
        assert row[3] == f"{100 * history[-1].sparsity:.1f}%", "the sparsity reached"
        assert row[4] == f"{100 * history[-1].test['accuracy']:.2f}", "accuracy in %"
        assert float(row[6]) == pytest.approx(sum(m.bytes_up for m in history) / 1e6, abs=0.01)
        assert float(row[8]) == pytest.approx(sum(m.seconds for m in history), abs=0.1)
    mb = {k: sum(m.bytes_up for m in r.history) for k, r in runs.items()}
    assert mb["dense"] > mb["50"] > mb["90"], "pruning shrinks what clients upload"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.stat().st_size > 10_000

    # without --plot nothing is written; a database that is not there is an error, not created
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(argv) == 0 and list(Path().iterdir()) == []
    assert main(["compare", "--tracking", "sqlite:///fedprune-runs/mlflow.db"]) == 2
    assert list(Path().iterdir()) == []
    Path("a-file").touch()
    for plot, said in (
        ("missing/c.png", "--plot: folder missing does not exist"),
        ("a-file/c.png", "--plot: cannot write a-file/c.png: a-file is a file, not a folder"),
        (".", "--plot: . is a folder; name the PNG file to write"),
        ("c.jpg", "--plot: c.jpg is not a .png file name"),
    ):
        capsys.readouterr()
        assert main([*argv, "--plot", plot]) == 2
        assert said in capsys.readouterr().out
    assert list(Path().iterdir()) == [Path("a-file")], "nothing written"


def test_resuming_a_finished_s3_run_exits_cleanly_and_changes_nothing(
    reference, mnist_tiny, s3_env
):
    cfg, result = reference
    backend = open_backend(cfg.store, cfg.s3)
    prefix = f"{cfg.experiment}/{result.run_id}/"
    before = {key: backend.get(key) for key in backend.list(prefix)}
    with pytest.raises(StoreError, match="already finished"):
        engine.run_experiment(cfg, data=mnist_tiny, resume=result.run_id)
    assert {key: backend.get(key) for key in backend.list(prefix)} == before
