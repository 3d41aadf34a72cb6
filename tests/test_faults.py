"""Faults and hostile input (issue 19): each finding as a test that failed before its fix.
Bad settings stop at `validate` with exit code 2 and the field named (and a fuzzer finds no
traceback); diverging training, signals, a full disk, corrupt store objects, a stopped MLflow
server and two runs on one new database each end cleanly and lose nothing."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient

from fedprune.cli import main
from fedprune.config import parse_config
from fedprune.engine import local as engine
from fedprune.io.publish import latest_global
from fedprune.io.store import LocalBackend, RunStore
from fedprune.records import RoundMetrics
from fedprune.tracking.mlflow import TrackingError
from fedprune.tracking.runs import start_run, tracker_for
from tests.services import MlflowServer

FEDPRUNE = str(Path(sys.executable).parent / "fedprune")
EXACT = ("test_accuracy", "test_loss", "train_loss", "sparsity", "nonzero_params", "bytes_up")


def tiny(tmp_path: Path, **overrides: object) -> dict:
    """Rounds of a few hundred ms: 4 clients on 2,000 MNIST images, a 32-wide MLP."""
    raw: dict = {
        "experiment": "faults",
        "rounds": 4,
        "data": {"num_clients": 4, "train_subset": 2000, "test_subset": 500},
        "model": {"hidden": 32},
        "client": {"epochs": 1, "batch_size": 32, "lr": 0.05},
        "pruning": {"schedule": {"kind": "oneshot", "target": 0.8, "at_round": 2}},
        "store": str(tmp_path / "runs"),
        "tracking": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    raw.update(overrides)
    return raw


def written(tmp_path: Path, raw: dict, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def exact(history: list[RoundMetrics]) -> list[tuple]:
    return [tuple(m.flat()[k] for k in EXACT) for m in history]


def final_history(store: RunStore) -> list[RoundMetrics]:
    return [RoundMetrics.from_json(m) for m in json.loads(store.load("")["metrics.json"])]


def only_run(tracking: str, experiment: str):
    client = MlflowClient(tracking)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run


BAD_SETTINGS = [
    ({"experiment": ".."}, "experiment"),
    ({"experiment": "."}, "experiment"),
    ({"experiment": "a/b"}, "experiment"),
    ({"experiment": "x" * 101}, "experiment"),
    ({"client": {"lr": math.inf}}, "client.lr"),
    ({"client": {"weight_decay": math.inf}}, "client.weight_decay"),
    ({"client": {"prox_mu": math.nan}}, "client.prox_mu"),
    ({"data": {"partition": {"kind": "dirichlet", "alpha": math.inf}}}, "data.partition.alpha"),
    ({"s3": {"timeout_s": math.inf}}, "s3.timeout_s"),
    ({"seed": -1}, "seed"),
    ({"seed": 10**23}, "seed"),
    ({"data": {"partition": {"kind": "shards", "shards_per_client": 10**9}}}, "shards_per_client"),
    ({"tracking": "http://alice:hunter2@mlflow:5000"}, "tracking"),
    ({"tracking": "http://mlflow:5000/?token=hunter2"}, "tracking"),
    ({"store": "s3://AKIA:hunter2@bucket/runs", "s3": {"endpoint": "minio:9000"}}, "store"),
    ({"s3": {"endpoint": "alice:hunter2@minio:9000"}}, "s3.endpoint"),
]


@pytest.mark.parametrize(("raw", "field"), BAD_SETTINGS, ids=[f for _, f in BAD_SETTINGS])
def test_bad_setting_fails_validate_with_exit_2_naming_the_field(raw, field, tmp_path, capsys):
    assert main(["validate", str(written(tmp_path, raw))]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert field in out and "Traceback" not in out
    assert "hunter2" not in out, "a credential is never echoed"


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**25), 10**25),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["..", ".", "a/b", "s3://x:y@b/p", "", "mnist", "iid", "gradual", "median"]),
    st.text(max_size=12),
)
SECTIONS = {
    "data": ["dataset", "num_clients", "train_subset", "test_subset", "path"],
    "client": ["lr", "epochs", "batch_size", "momentum", "weight_decay", "prox_mu", "vectorize"],
    "pruning": ["method", "placement", "scope", "every"],
    "aggregation": ["method", "min_clients", "f", "beta", "outlier_norm", "max_upload_bytes"],
    "sampling": ["fraction", "count"],
    "s3": ["endpoint", "timeout_s", "retries", "backoff_s"],
    "compression": ["encoding", "values"],
    "eval": ["batch_size", "every"],
}
NESTED = {
    "partition": ["kind", "alpha", "shards_per_client", "min_samples"],
    "schedule": ["kind", "target", "start_round", "end_round", "at_round"],
}
TOP = ["experiment", "seed", "rounds", "store", "tracking", "init_from", "callbacks"]


def section(keys: list[str]) -> st.SearchStrategy[dict]:
    return st.dictionaries(st.sampled_from(keys), VALUES, max_size=4)


CONFIGS = st.fixed_dictionaries(
    {},
    optional={
        **{key: VALUES for key in TOP},
        **{name: section(keys) for name, keys in SECTIONS.items()},
        "data": section(SECTIONS["data"]).flatmap(
            lambda d: section(NESTED["partition"]).map(lambda p: {**d, "partition": p})
        ),
        "pruning": section(SECTIONS["pruning"]).flatmap(
            lambda d: section(NESTED["schedule"]).map(lambda s: {**d, "schedule": s})
        ),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(raw=st.one_of(CONFIGS, st.text(max_size=40), st.lists(VALUES, max_size=3)))
def test_validate_never_raises_on_generated_configs(raw, tmp_path, monkeypatch, capsys):
    """Whatever the file holds: exit 0 or 2, never a traceback (no data set is on hand, so
    `validate` checks the config alone and says the data was not checked)."""
    monkeypatch.setenv("FEDPRUNE_DATA", str(tmp_path / "no-data"))
    path = tmp_path / "fuzz.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    assert main(["validate", str(path)]) in (0, 2)
    capsys.readouterr()


def test_diverging_training_fails_the_round_and_publishes_nothing(tmp_path, capsys):
    raw = tiny(tmp_path, client={"epochs": 1, "lr": 1e30})
    assert main(["run", str(written(tmp_path, raw))]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "training diverged" in out and "lower client.lr" in out
    run = only_run(raw["tracking"], raw["experiment"])
    assert run.info.status == "FAILED"
    store = RunStore(LocalBackend(raw["store"]), raw["experiment"], run.info.run_id)
    assert store.published_rounds() == [] and not store.finished()


@pytest.mark.parametrize("key", ["store", "tracking"])
def test_a_store_or_database_under_a_file_fails_before_any_run(tmp_path, capsys, key):
    (tmp_path / "a-file").touch()
    raw = tiny(tmp_path)
    raw[key] = {"store": str(tmp_path / "a-file/runs"),
                "tracking": f"sqlite:///{tmp_path / 'a-file/mlflow.db'}"}[key]  # fmt: skip
    assert main(["run", str(written(tmp_path, raw))]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert f"{key}: cannot write under" in out and "a-file is a file, not a folder" in out
    assert "round |" not in out, "no round started"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "run.yaml"], "no run made"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[tuple]:
    """The run the interrupted ones must match after resuming."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    result = engine.run_experiment(parse_config(tiny(folder, rounds=6)))
    return exact(result.history)


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_run_ends_cleanly_and_resume_matches_uninterrupted(
    number, uninterrupted, tmp_path
):
    """SIGTERM to the process (as `kill` and Kubernetes send it), SIGINT to its process group
    (as Ctrl-C does, so the tracking process gets it too), after a random round."""
    raw = tiny(tmp_path, rounds=6)
    path = written(tmp_path, raw)
    chance = random.Random(int(number))
    after_round = chance.randint(1, 3)
    child = subprocess.Popen(
        [FEDPRUNE, "run", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    manifests = Path(raw["store"]) / raw["experiment"]
    deadline = time.monotonic() + 120
    pattern = f"*/rounds/{after_round:04d}/manifest.json"
    while not list(manifests.glob(pattern)) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(chance.uniform(0.0, 0.3))
    if number == signal.SIGINT:
        os.killpg(child.pid, number)
    else:
        child.send_signal(number)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 128 + number, out + err
    assert "Traceback" not in out + err
    assert "interrupted: stopped by" in out and "--resume" in out
    (run_dir,) = manifests.iterdir()
    store = RunStore(LocalBackend(raw["store"]), raw["experiment"], run_dir.name)
    published = store.published_rounds()
    assert published == list(range(1, len(published) + 1)) and len(published) >= after_round
    assert only_run(raw["tracking"], raw["experiment"]).info.status == "KILLED"

    assert main(["run", str(path), "--resume", run_dir.name]) == 0
    assert exact(final_history(store)) == uninterrupted


def test_full_disk_fails_clearly_and_resume_finishes_once_there_is_space(tmp_path, capsys):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        raw = tiny(tmp_path, store=str(disk / "runs"))
        path = written(tmp_path, raw)
        assert main(["run", str(path)]) == 2
        out = " ".join(capsys.readouterr().out.split())  # the console folds long lines
        assert "No space left on device" in out and "Traceback" not in out
        run = only_run(raw["tracking"], raw["experiment"])
        assert run.info.status == "FAILED"
        store = RunStore(LocalBackend(raw["store"]), raw["experiment"], run.info.run_id)
        published = store.published_rounds()
        assert 1 <= len(published) < 4, "the disk filled up mid-run"
        for round_ in published:
            store.load_round(round_)  # every checksum still holds

        subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)
        assert main(["run", str(path), "--resume", run.info.run_id]) == 0
        assert [m.round for m in final_history(store)] == [1, 2, 3, 4]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_corrupt_manifest_and_config_are_clear_errors_and_latest_skips_them(
    tmp_path, capsys, caplog
):
    raw = tiny(tmp_path, rounds=2)
    path = written(tmp_path, raw)
    backend = LocalBackend(raw["store"])
    runs = []
    for _ in range(2):
        assert main(["run", str(path)]) == 0
        runs.append(max(backend.root.joinpath(raw["experiment"]).iterdir(), key=_created).name)
    older, newer = (RunStore(backend, raw["experiment"], r) for r in runs)
    (backend.root / newer.prefix / "manifest.json").unlink()  # unfinished: can be resumed
    (backend.root / newer.prefix / "rounds/0002/manifest.json").write_text('{"objects": ')
    capsys.readouterr()

    assert main(["run", str(path), "--resume", newer.run_id]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "rounds/0002/manifest.json is corrupt" in out and "Traceback" not in out

    # a warm start takes finished runs only (not the newer one, unfinished now) and skips a
    # corrupt round for the newest good one: the older run's round 2, then (its model
    # flipped) its round 1
    _, source, _ = latest_global(backend, raw["experiment"])
    assert source == f"{older.prefix}/rounds/0002"
    model = backend.root / older.prefix / "rounds/0002/model.safetensors"
    flipped = bytearray(model.read_bytes())
    flipped[-1] ^= 0xFF
    model.write_bytes(bytes(flipped))
    _, source, _ = latest_global(backend, raw["experiment"])
    assert source == f"{older.prefix}/rounds/0001"
    assert "skipping round 2" in caplog.text
    assert main(["run", str(written(tmp_path, {**raw, "init_from": "latest"}, "warm.yaml"))]) == 0

    (backend.root / newer.prefix / "config.yaml").write_text("rounds: [unclosed")
    capsys.readouterr()
    assert main(["run", str(path), "--resume", newer.run_id]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "config.yaml is corrupt" in out and "Traceback" not in out


def _created(folder: Path) -> int:
    return (folder / "config.yaml").stat().st_mtime_ns


def test_two_runs_started_together_on_a_new_database_both_finish(tmp_path):
    raw = tiny(tmp_path, rounds=1, pruning={"schedule": {"kind": "oneshot", "target": 0.8}})
    path = written(tmp_path, raw)
    children = [
        subprocess.Popen(
            [FEDPRUNE, "run", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=180)[0] for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    client = MlflowClient(raw["tracking"])
    runs = client.search_runs([client.get_experiment_by_name(raw["experiment"]).experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    folders = list((Path(raw["store"]) / raw["experiment"]).iterdir())
    assert len(folders) == 2, "each run its own folder"


class StopAfterRound1(engine.Progress):
    def __init__(self, server: MlflowServer):
        self.server = server

    def round_done(self, metrics: RoundMetrics) -> None:
        if metrics.round == 1:
            self.server.stop()


def test_mlflow_server_stopped_mid_run_loses_nothing_and_resume_backfills(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    server = MlflowServer(tmp_path / "mlflow", str(tmp_path / "mlflow" / "artifacts")).start()
    try:
        cfg = parse_config(tiny(tmp_path, tracking=server.uri))
        with pytest.raises(TrackingError, match="server is running"):
            engine.run_experiment(cfg, progress=StopAfterRound1(server))
        (run_dir,) = (Path(cfg.store) / cfg.experiment).iterdir()
        store = RunStore(LocalBackend(cfg.store), cfg.experiment, run_dir.name)
        published = store.published_rounds()
        assert published and not store.finished()

        server.start()  # same port, same database
        result = engine.run_experiment(cfg, resume=run_dir.name)
        assert [m.round for m in result.history] == [1, 2, 3, 4]
        client = MlflowClient(server.uri)
        steps = [m.step for m in client.get_metric_history(run_dir.name, "test_accuracy")]
        assert sorted(steps) == [1, 2, 3, 4], "the rounds MLflow missed are backfilled, once"
        assert client.get_run(run_dir.name).info.status == "FINISHED"
    finally:
        server.stop()


POD = """
import sys, time
from fedprune.config import parse_config
from fedprune.tracking.runs import end_on_signals
import yaml
cfg = parse_config(yaml.safe_load(open(sys.argv[1])))
end_on_signals(cfg, sys.argv[2])
print("ready", flush=True)
time.sleep(60)
"""


def test_a_pod_stopped_by_sigterm_marks_the_run_killed_and_exits_143(tmp_path):
    """What every component that logs to a run installs first (`end_on_signals`)."""
    raw = tiny(tmp_path)
    run_id = start_run(tracker_for(parse_config(raw)), parse_config(raw), engine="kubeflow")
    pod = subprocess.Popen(
        [sys.executable, "-c", POD, str(written(tmp_path, raw)), run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert pod.stdout is not None and pod.stdout.readline() == "ready\n"
    pod.send_signal(signal.SIGTERM)
    _, err = pod.communicate(timeout=60)
    assert pod.returncode == 143 and "Traceback" not in err
    assert MlflowClient(raw["tracking"]).get_run(run_id).info.status == "KILLED"
