"""The local engine's MLflow client in a process of its own (`python -m
fedprune.tracking.worker`), so importing MLflow, setting up its database and logging never
hold the training process's interpreter (a thread would: the GIL).

Protocol, one JSON object a line: the first line on stdin opens the run, `{"uri", "experiment",
"artifact_root", "start": [run_name, params, tags]}` or `{..., "reopen": run_id}`; every later
line is a call, `{"call": name, "args": [...]}` on `Tracker`. Each line gets one answer on
stdout, in order: `{"ok": result}` or `{"error": message, "user": bool}` (`user`: a
`UserError`, the message says what to check). Bytes travel base64-encoded.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from fedprune.errors import UserError, ignore_signals
from fedprune.tracking.mlflow import Tracker


def _answer(action, request: dict) -> dict:
    try:
        result = action(request)
    except UserError as error:
        return {"error": str(error), "user": True}
    except OSError as error:  # disk full or read-only where MLflow keeps its files
        where = f" ({error.filename})" if error.filename else ""
        return {"error": f"MLflow could not write: {error.strerror or error}{where}", "user": True}
    except Exception:
        return {"error": traceback.format_exc(), "user": False}
    return {"ok": sorted(result) if isinstance(result, set) else result}


def serve(lines, out) -> None:
    import mlflow  # noqa: F401  (its import sets its loggers up: quiet them after it)

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its DB-migration chatter
    logging.getLogger("alembic").setLevel(logging.WARNING)
    tracker: Tracker | None = None

    def open_run(request: dict) -> str:
        nonlocal tracker
        tracker = Tracker(request["uri"], request["experiment"], Path(request["artifact_root"]))
        if "reopen" in request:
            tracker.reopen(request["reopen"])
            return tracker.run_id
        return tracker.start(*request["start"])

    def call(request: dict):
        assert tracker is not None
        args = list(request["args"])
        if request["call"] == "log_bytes":
            args[1] = base64.b64decode(args[1])
        return getattr(tracker, request["call"])(*args)

    first = True
    for line in lines:
        request = json.loads(line)
        if first:
            answer, first = _answer(open_run, request), False
        elif tracker is None:  # the run never opened: every call fails as opening did
            answer = {"error": "the MLflow run could not be opened", "user": True}
        else:
            answer = _answer(call, request)
        out.write(json.dumps(answer) + "\n")
        out.flush()


def main() -> None:
    """Answers go to the original stdout, kept to themselves: MLflow prints to stdout (run
    links), so fd 1 and `sys.stdout` become stderr for everything else."""
    ignore_signals()  # the training process marks the run KILLED through us, then ends us
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin, answers)


if __name__ == "__main__":
    main()
