"""MLflow off the critical path: the local engine's tracking calls go to a process of its own
(`fedprune.tracking.worker`), in order. Importing MLflow, setting up its database and opening
the run happen while the initial model is built and round 1 trains, and each round's metrics
are logged while the next one trains; the training process never imports MLflow.

The work a tracking call does is the same; only who waits for it changes. A call that failed
is raised at the next call, so a tracking error still stops the run with its own message (and
the last published round is never affected).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

from fedprune.errors import UserError
from fedprune.tracking.mlflow import TrackingError, ui_hint


class Background:
    """A tracker whose calls return at once; `run_id` and `logged_steps` wait for answers."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path, opening: dict):
        """`opening`: `{"start": [run_name, params, tags]}` or `{"reopen": run_id}`."""
        self.uri = uri
        self._process = subprocess.Popen(
            [sys.executable, "-m", "fedprune.tracking.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._answers: list[Future] = []
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()  # the queue of answers
        self._writing = threading.Lock()  # one request at a time on the pipe
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        request = {"uri": uri, "experiment": experiment, "artifact_root": str(artifact_root)}
        self._opened = self._send(request | opening)

    def _send(self, request: dict) -> Future:
        """Queue the answer, then write the request. Writing can block on a full pipe while
        the process answers earlier calls: the reader takes only `_lock`, never `_writing`,
        so it keeps draining the answers meanwhile."""
        future: Future = Future()
        with self._writing:
            with self._lock:
                self._answers.append(future)
            try:
                assert self._process.stdin is not None
                self._process.stdin.write(json.dumps(request) + "\n")
                self._process.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # the reader fails every waiting answer when the process is gone
        return future

    def _read(self) -> None:
        try:
            self._answer_all()
        finally:  # whatever ended the answers, nobody waits forever
            with self._lock:
                left, self._answers = self._answers, []
            gone = TrackingError("the MLflow tracking process exited")
            self._errors.append(gone)
            for future in left:
                future.set_exception(gone)

    def _answer_all(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            answer = json.loads(line)
            with self._lock:
                future = self._answers.pop(0)
            if "ok" in answer:
                future.set_result(answer["ok"])
                continue
            error = answer["error"]
            failure = TrackingError(error) if answer["user"] else RuntimeError(f"tracking: {error}")
            self._errors.append(failure)
            future.set_exception(failure)

    def _call(self, name: str, *args: object) -> Future:
        self._raise_failed()
        return self._send({"call": name, "args": list(args)})

    def _raise_failed(self) -> None:
        """Raise the error of an earlier call that failed (the run's opening included)."""
        if self._errors:
            raise self._errors[0]

    @property
    def run_id(self) -> str:
        return self._opened.result()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._call("log_metrics", {k: float(v) for k, v in metrics.items()}, step)

    def log_bytes(self, name: str, data: bytes, folder: str | None = None) -> None:
        self._call("log_bytes", name, base64.b64encode(data).decode(), folder)

    def prepare_model_logging(self) -> None:
        self._call("prepare_model_logging")

    def log_model(
        self,
        model_file: str,
        example_file: str,
        registered: str | None,
        tags: dict[str, str],
        step: int,
    ) -> Future:
        """`Tracker.log_model` in the tracking process; the answer comes as a Future. The
        process reads the files: keep them until it is done."""
        return self._call("log_model", model_file, example_file, registered, tags, step)

    def log_input(self, name: str, digest: str, source: str, context: str) -> None:
        self._call("log_input", name, digest, source, context)

    def set_tag(self, key: str, value: str) -> None:
        self._call("set_tag", key, value)

    def logged_steps(self, metric: str) -> set[int]:
        return set(self._call("logged_steps", metric).result())

    def finish(self, status: str = "FINISHED") -> None:
        """Close the run once every call before has been made; raise the first error."""
        self._call("finish", status).result()
        self.drain()

    def drain(self) -> None:
        """Wait for every call's answer; raise the first error."""
        with self._lock:
            waiting = list(self._answers)
        for future in waiting:
            future.exception()
        self._raise_failed()

    def abandon(self, status: str) -> None:
        """Mark the run FAILED or KILLED if it was opened; never raise a second error."""
        try:
            self._opened.result()
            self._send({"call": "abandon", "args": [status]}).result()
        except (UserError, RuntimeError):
            pass  # the error that got us here is the one to report

    def ui_hint(self) -> str:
        return ui_hint(self.uri)

    def close(self) -> None:
        """End the tracking process (after the calls it was sent)."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:  # stuck on a server that stopped answering
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout=5)
