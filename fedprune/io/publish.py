"""What a round publishes to the artifact store and how it is read back, the same from both
engines: the local engine calls these in-process, the Kubeflow components from their pods. So
every run, wherever it ran, can be inspected, compared, resumed from and warm-started from."""

from __future__ import annotations

import dataclasses
import json
import re

from fedprune.config import ExperimentConfig
from fedprune.io.s3 import open_backend
from fedprune.io.store import (
    MANIFEST,
    Backend,
    RunStore,
    model_and_state,
    model_bytes,
)
from fedprune.records import ClientUpdate, GlobalModel, RoundMetrics


def run_store(cfg: ExperimentConfig, run_id: str) -> RunStore:
    return RunStore(open_backend(cfg.store, cfg.s3), cfg.experiment, run_id)


def metrics_bytes(history: list[RoundMetrics]) -> bytes:
    return json.dumps([dataclasses.asdict(m) for m in history], indent=2).encode()


def round_objects(
    global_model: GlobalModel,
    updates: list[ClientUpdate],
    history: list[RoundMetrics],
    quarantined: dict[str, bytes] | None = None,
) -> dict[str, bytes]:
    """A round's own objects: the new global model, what each accepted client sent, the
    metrics history so far and the `quarantined` uploads the screening rejected (the
    clients' state is published beside them, `fedprune.io.state`)."""
    summaries = [
        {
            "client": u.client,
            "num_samples": u.num_samples,
            "bytes": len(u.payload),
            "train_loss": u.train_loss,
        }
        for u in updates
    ]
    return {
        "model.safetensors": model_bytes(
            global_model.weights, global_model.mask, global_model.state
        ),
        "updates.json": json.dumps(summaries, indent=2).encode(),
        "metrics.json": metrics_bytes(history),
        **(quarantined or {}),
    }


def round_state(store: RunStore, round_: int) -> tuple[GlobalModel, list[RoundMetrics]]:
    """The global model after round `round_` and the metrics of rounds 1…`round_`."""
    objects = store.load_round(round_, ["model.safetensors", "metrics.json"])
    model = GlobalModel(*model_and_state(objects["model.safetensors"]))
    history = [RoundMetrics(**m) for m in json.loads(objects["metrics.json"])]
    return model, history


def history_until(store: RunStore, round_: int) -> list[RoundMetrics]:
    """The metrics of rounds 1…`round_` as published with round `round_` (empty for 0)."""
    if round_ == 0:
        return []
    raw = json.loads(store.load_round(round_, ["metrics.json"])["metrics.json"])
    return [RoundMetrics(**m) for m in raw]


def latest_global(backend: Backend, experiment: str) -> tuple[GlobalModel, str] | None:
    """The most recently published global model of any run of `experiment` (for warm starts),
    and where it came from; None if the experiment has no published round yet."""
    pattern = re.compile(rf"^{re.escape(experiment)}/([^/]+)/rounds/(\d+)/{MANIFEST}$")
    last_round: dict[str, int] = {}
    for key in backend.list(f"{experiment}/"):
        if match := pattern.match(key):
            run, round_ = match[1], int(match[2])
            last_round[run] = max(last_round.get(run, 0), round_)
    newest: tuple[float, str, int] | None = None
    for run, round_ in last_round.items():
        manifest = json.loads(backend.get(f"{experiment}/{run}/rounds/{round_:04d}/{MANIFEST}"))
        stamp = float(manifest.get("published_at", 0.0))
        if newest is None or stamp > newest[0]:
            newest = (stamp, run, round_)
    if newest is None:
        return None
    _, run, round_ = newest
    model, _ = round_state(RunStore(backend, experiment, run), round_)
    # the model, not the strategy's state: the new run may aggregate with another rule
    return GlobalModel(model.weights, model.mask), f"{experiment}/{run}/rounds/{round_:04d}"
