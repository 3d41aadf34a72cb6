"""Real servers for tests: SeaweedFS (an S3 server that checks signatures) and an MLflow tracking
server whose artifacts are proxied to it. Each starts once per session on free 127.0.0.1 ports
and is stopped by its PID; tests that need to stop S3 start a private SeaweedFS of their own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ACCESS_KEY = "fedprune-test"
SECRET_KEY = "fedprune-test-secret"
BUCKETS = ("fedprune", "mlflow")
BIN = Path(sys.executable).parent


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out as free, all held at once so none repeats."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def wait_http(url: str, seconds: float, proc: subprocess.Popen, log: Path) -> None:
    """Until the URL answers at all (any HTTP status); fail early if the process died."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args[0]} exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {seconds} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group we started (the server and its workers), SIGKILL if stuck."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass
class SeaweedFS:
    """`weed mini` with every listener on a free port (several may run at once)."""

    folder: Path
    ports: list[int] = field(default_factory=lambda: free_ports(12))
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.ports[6]}"

    def start(self) -> SeaweedFS:
        self.folder.mkdir(parents=True, exist_ok=True)
        identities = self.folder / "identities.json"
        identity = {
            "name": "fedprune",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        identities.write_text(json.dumps({"identities": [identity]}))
        names = (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
            "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
            "metricsPort", "s3.metricsPort",
        )  # fmt: skip
        log = self.folder / "weed.log"
        self.proc = subprocess.Popen(
            [
                str(BIN / "weed"), "mini", f"-dir={self.folder / 'data'}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", f"-s3.config={identities}", "-admin.ui=false",
                "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.telemetry=false", f"-bucket={','.join(BUCKETS)}",
                *(f"-{n}={p}" for n, p in zip(names, self.ports, strict=True)),
            ],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        wait_http(f"http://{self.endpoint}/", 30, self.proc, log)
        client = self.client()
        deadline = time.monotonic() + 30
        while not self._serves(client):  # buckets are created, volumes join, just after start
            if time.monotonic() > deadline:
                raise RuntimeError(f"{BUCKETS} not served:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        return self

    @staticmethod
    def _serves(client) -> bool:
        """Every bucket exists and takes a write and a read (after a restart the filer lists
        before the volume server serves reads)."""
        import io

        try:
            for bucket in BUCKETS:
                client.put_object(bucket, ".ready", io.BytesIO(b"ok"), 2)
                response = client.get_object(bucket, ".ready")
                response.read()
                response.close()
                response.release_conn()
        except Exception:  # not up yet: any client error
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def client(self):
        from minio import Minio

        return Minio(self.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)


@dataclass
class MlflowServer:
    """`mlflow server` on SQLite with artifacts in `artifacts` (a folder, or an S3 URI with
    `env` naming the S3 server); it can be stopped and started again on the same port."""

    folder: Path
    artifacts: str
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=lambda: free_ports(1)[0])
    proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MlflowServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = self.folder / "server.log"
        self.proc = subprocess.Popen(
            [
                str(BIN / "mlflow"), "server", "--backend-store-uri",
                f"sqlite:///{self.folder / 'mlflow.db'}", "--artifacts-destination",
                self.artifacts, "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", "1",
            ],
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.env},
            cwd=self.folder,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        wait_http(f"{self.uri}/health", 120, self.proc, log)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server(
    s3_server: SeaweedFS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """SQLite backend, artifacts proxied to the `mlflow` bucket (clients never see S3)."""
    env = {
        "MLFLOW_S3_ENDPOINT_URL": f"http://{s3_server.endpoint}",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), "s3://mlflow/artifacts", env)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The credentials the store reads, from the environment as in production."""
    monkeypatch.setenv("FEDPRUNE_S3_ACCESS_KEY", ACCESS_KEY)
    monkeypatch.setenv("FEDPRUNE_S3_SECRET_KEY", SECRET_KEY)
