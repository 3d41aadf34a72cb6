"""The local engine's MLflow process: calls in order, off the rounds' path, and a tracking
failure is a clear error, never a hang."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fedprune.engine import local as engine
from fedprune.tracking.background import Background
from fedprune.tracking.mlflow import TrackingError


def test_calls_are_made_in_order_and_the_run_finishes(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = Background(uri, "bg", tmp_path / "artifacts", {"start": ["r", {"a": "1"}, {}]})
    for step in range(1, 6):
        tracking.log_metrics({"loss": 1.0 / step}, step=step)
    tracking.log_bytes("notes.txt", b"\x00binary\xff")
    assert tracking.logged_steps("loss") == {1, 2, 3, 4, 5}
    tracking.finish()
    tracking.close()
    client = MlflowClient(uri)
    run = client.get_run(tracking.run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"a": "1"}
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [
        1.0 / s for s in range(1, 6)
    ]
    (artifact,) = client.list_artifacts(run.info.run_id)
    path = client.download_artifacts(run.info.run_id, artifact.path, str(tmp_path))
    assert Path(path).read_bytes() == b"\x00binary\xff"


def test_an_unreachable_tracking_server_fails_the_run_clearly(make_config, mnist_small):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = make_config(rounds=1, tracking=f"http://127.0.0.1:{port}")
    with pytest.raises(TrackingError, match=rf"127.0.0.1:{port} failed: .*server is running"):
        engine.run_experiment(cfg, data=mnist_small)


def test_a_tracking_process_that_dies_is_an_error_not_a_hang(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = Background(uri, "bg", tmp_path / "artifacts", {"start": ["r", {}, {}]})
    assert tracking.run_id
    os.kill(tracking._process.pid, signal.SIGKILL)
    tracking._process.wait()
    tracking._reader.join(timeout=10)
    with pytest.raises(TrackingError, match="tracking process exited"):
        tracking.log_metrics({"loss": 1.0}, step=1)
    tracking.close()
