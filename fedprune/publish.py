"""What a run publishes to the artifact store, the same from both engines: the local engine
calls these in-process, the Kubeflow components from their pods. So every run, wherever it
ran, can be inspected, compared, resumed from, and warm-started from.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
from pathlib import Path

from torch import nn

from fedprune import steps
from fedprune.compression import decode
from fedprune.config import ExperimentConfig
from fedprune.data import ImageDataset
from fedprune.methods import Method
from fedprune.partition import Partition
from fedprune.plots import plot_run
from fedprune.pruning import Mask
from fedprune.steps import GlobalModel, RoundMetrics
from fedprune.store import (
    MANIFEST,
    Backend,
    RunStore,
    model_bytes,
    model_from_bytes,
    open_backend,
)
from fedprune.tracking import Tracker

PERSONAL_INDEX = "personal.json"


def personal_name(client: int) -> str:
    """Where a round keeps a client's personal model (its upload) among the round's objects."""
    return f"personal/client-{client:06d}.safetensors"


def run_store(cfg: ExperimentConfig, run_id: str) -> RunStore:
    return RunStore(open_backend(cfg.store, cfg.s3), cfg.experiment, run_id)


def round_objects(
    global_model: GlobalModel,
    updates: list[steps.ClientUpdate],
    history: list[RoundMetrics],
    held: dict[int, str],
    personal: dict[int, int] | None = None,
) -> dict[str, bytes]:
    """What a round publishes: the new global model, what each client sent, the metrics
    history so far and which mask each client holds (the state a resume continues from).
    With personal masks, also each client's upload (its personal model and mask) and
    `personal`: for every client that has one, the round that published its latest."""
    summaries = [
        {
            "client": u.client,
            "num_samples": u.num_samples,
            "bytes": len(u.payload),
            "train_loss": u.train_loss,
        }
        for u in updates
    ]
    objects = {
        "model.safetensors": model_bytes(global_model.weights, global_model.mask),
        "updates.json": json.dumps(summaries, indent=2).encode(),
        "metrics.json": json.dumps([dataclasses.asdict(m) for m in history], indent=2).encode(),
        "held_masks.json": json.dumps(held).encode(),
    }
    if personal is not None:
        objects[PERSONAL_INDEX] = json.dumps(personal).encode()
        objects |= {personal_name(u.client): u.payload for u in updates}
    return objects


def held_after(store: RunStore, round_: int) -> dict[int, str]:
    """Each client's mask id after round `round_` (none after round 0)."""
    if round_ == 0:
        return {}
    held = json.loads(store.load_round(round_, ["held_masks.json"])["held_masks.json"])
    return {int(client): mask for client, mask in held.items()}


def personal_after(store: RunStore, round_: int) -> dict[int, int]:
    """For each client with a personal model after round `round_`, the round that published
    it (none after round 0)."""
    if round_ == 0:
        return {}
    index = json.loads(store.load_round(round_, [PERSONAL_INDEX])[PERSONAL_INDEX])
    return {int(client): published for client, published in index.items()}


def personal_masks(store: RunStore, round_: int, clients: list[int]) -> dict[int, Mask]:
    """The personal masks of `clients` after round `round_`; a client that never trained
    has none yet (it starts from the global mask)."""
    index = personal_after(store, round_)
    masks = {}
    for client in (c for c in clients if c in index):
        name = personal_name(client)
        masks[client] = decode(store.load_round(index[client], [name])[name])[1]
    return masks


def round_state(store: RunStore, round_: int) -> tuple[GlobalModel, list[RoundMetrics]]:
    """The global model after round `round_` and the metrics of rounds 1…`round_`."""
    objects = store.load_round(round_, ["model.safetensors", "metrics.json"])
    weights, mask = model_from_bytes(objects["model.safetensors"])
    history = [RoundMetrics(**m) for m in json.loads(objects["metrics.json"])]
    return GlobalModel(weights, mask), history


def history_until(store: RunStore, round_: int) -> list[RoundMetrics]:
    """The metrics of rounds 1…`round_` as published with round `round_` (empty for 0)."""
    return round_state(store, round_)[1] if round_ else []


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
    return model, f"{experiment}/{run}/rounds/{round_:04d}"


def initial_model(
    backend: Backend,
    model: nn.Module,
    method: Method,
    data: ImageDataset,
    shards: Partition,
    cfg: ExperimentConfig,
) -> tuple[GlobalModel, str]:
    """The round-0 global model and where it came from: the seed's fresh weights, or with
    `init_from: latest` the experiment's newest published model (fresh if there is none), so
    a scheduled run continues training instead of restarting."""
    if cfg.init_from == "latest" and (found := latest_global(backend, cfg.experiment)):
        return found
    return steps.init_global(model, method, data, shards, cfg), "scratch"


def finish(
    store: RunStore,
    tracker: Tracker,
    global_model: GlobalModel,
    history: list[RoundMetrics],
    costs: dict[str, float],
    cfg: ExperimentConfig,
) -> None:
    """Publish the final model, metrics, inference costs (`Method.costs`) and plots (manifest
    last) and log them to MLflow."""
    final = {
        "model.safetensors": model_bytes(global_model.weights, global_model.mask),
        "metrics.json": json.dumps([dataclasses.asdict(m) for m in history], indent=2).encode(),
        "costs.json": json.dumps(costs, indent=2).encode(),
    }
    with tempfile.TemporaryDirectory() as scratch:
        for plot in plot_run(history, Path(scratch), f"{cfg.experiment} ({store.run_id[:8]})"):
            final[plot.name] = plot.read_bytes()
    store.publish("", final, rounds=len(history))
    for name, data in final.items():
        tracker.log_bytes(name, data, "plots" if name.endswith(".png") else None)
    tracker.log_metrics(costs, step=len(history))
