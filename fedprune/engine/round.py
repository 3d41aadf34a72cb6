"""The one round driver both engines call. The local engine runs it in one process; the
Kubeflow components run its parts in their pods (broadcast: `plan_round`; train:
`client_starts`; evaluate: `conclude_round`), reading the clients' state back from the store.

A round: sample → downloads (from the clients' state) → train → aggregate → server prune →
metrics → callbacks → the clients' new state → publish. Sampling, downloads, the clients'
state and the history are computed here and nowhere else, so both engines give the same
numbers, and a new piece of client state is one line in `conclude_round`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import ValidationError

from fedprune import steps
from fedprune.config import ExperimentConfig, flatten
from fedprune.engine.callbacks import Callback, RoundContext, run_callbacks
from fedprune.engine.export import SHRUNK, final_artifacts, log_final_model
from fedprune.io.codec import decode
from fedprune.io.publish import (
    history_until,
    latest_global,
    metrics_bytes,
    round_model,
    round_objects,
)
from fedprune.io.state import ClientState
from fedprune.io.store import Backend, RunStore, StoreError, compact_model_bytes, model_bytes
from fedprune.privacy.secure.aggregate import SecureRound
from fedprune.pruning.masks import Mask
from fedprune.records import ClientUpdate, GlobalModel, RoundMetrics, RoundPlan
from fedprune.steps import Runtime
from fedprune.steps.pretrained import pretrained_weights
from fedprune.tracking.background import Background
from fedprune.tracking.mlflow import Tracker
from fedprune.tracking.plots import plot_run

HELD = "mask_id"
"""Client state: the id of the mask a client last received (values-only downloads)."""
PERSONAL = "personal"
"""Client state: a client's latest upload, its personal model and mask (LotteryFL)."""


def personal_masks(state: ClientState, clients: list[int]) -> dict[int, Mask]:
    """The personal masks of `clients` (a client that never trained has none yet)."""
    return {c: decode(state.blob(PERSONAL, c))[1] for c in clients if state.has_blob(PERSONAL, c)}


def plan_round(
    rt: Runtime,
    global_model: GlobalModel,
    state: ClientState,
    *,
    round_: int,
    rounds_before: int = 0,
) -> RoundPlan:
    """Sample the round's clients (by the model's round across runs, `RoundPlan.model_round`)
    and encode what each downloads."""
    started = time.time()
    clients = steps.sample_clients(rt.cfg, rounds_before + round_)
    payload = steps.broadcast(global_model, rt.cfg)
    sent = steps.downloads(
        global_model,
        payload,
        clients,
        held=state.of(HELD),
        personal=personal_masks(state, clients) if rt.method.personal else {},
        cfg=rt.cfg,
    )
    return RoundPlan(round_, clients, sent, started, rounds_before)


def client_starts(
    rt: Runtime, state: ClientState, plan: RoundPlan, *, clients: list[int]
) -> dict[int, steps.Personal]:
    """What `clients` (some of the plan's) keep of their own when they start (LotteryFL)."""
    if not rt.method.personal:
        return {}
    return steps.personal_starts(personal_masks(state, clients), plan.sent)


def conclude_round(
    rt: Runtime,
    plan: RoundPlan,
    *,
    updates: list[ClientUpdate],
    candidate: GlobalModel,
    state: ClientState,
    history: list[RoundMetrics],
    store: RunStore,
    callbacks: list[tuple[str, Callback]],
    rejected: Sequence[steps.Rejection] = (),
    secure: SecureRound | None = None,
) -> RoundMetrics:
    """Measure the round, run the callbacks, advance the clients' state and publish the
    round (model, accepted updates, its metrics, state, the rejected uploads with their
    reasons); returns the round's metrics. With `secure`, the bytes are the secure
    aggregation protocol's. `state` and `history` are those after the previous
    round; `state` is advanced in place."""
    seconds = time.time() - plan.started  # training and aggregation; not the test pass
    everything, updates = updates, steps.accepted(updates, rejected)
    metrics = steps.round_metrics(
        rt, plan.round, candidate, updates=updates, sent=plan.sent, seconds=seconds,
        model_round=plan.model_round,
    )  # fmt: skip
    if secure is not None:  # the protocol's messages replace the payloads
        metrics = dataclasses.replace(
            metrics,
            bytes_up=secure.bytes_up,
            bytes_down=metrics.bytes_down + secure.bytes_down,
            floor_ratio_up=math.nan,
            secure_seconds=secure.seconds,
        )
    metrics = dataclasses.replace(
        metrics,
        mb_up_total=(sum(m.bytes_up for m in history) + metrics.bytes_up) / 1e6,
        mb_down_total=(sum(m.bytes_down for m in history) + metrics.bytes_down) / 1e6,
    )
    if rejected:
        reasons = {str(r.client): r.reason for r in rejected}
        metrics = dataclasses.replace(metrics, rejected_updates=len(rejected), rejected=reasons)
    if callbacks:
        ctx = RoundContext(plan.round, candidate, updates, metrics, rt.cfg)
        metrics = dataclasses.replace(metrics, extra=run_callbacks(callbacks, ctx))
    state.set(HELD, plan.clients, plan.sent.mask_id)
    if rt.method.personal:
        for update in updates:
            state.put_blob(PERSONAL, update.client, update.payload)
    objects = round_objects(
        candidate, updates, metrics, quarantine(everything, rejected),
        rounds_before=plan.rounds_before,
    )  # fmt: skip
    store.publish_round(plan.round, objects | state.objects(plan.round))
    return metrics


def quarantine(
    updates: list[ClientUpdate], rejected: Sequence[steps.Rejection]
) -> dict[str, bytes]:
    """The rejected uploads as sent, and why, for the round's `rejected/` folder."""
    if not rejected:
        return {}
    sent = {u.client: u.payload for u in updates}
    reasons = [{"client": r.client, "reason": r.reason} for r in rejected]
    objects = {f"rejected/client-{r.client:06d}.bin": sent[r.client] for r in rejected}
    return objects | {"rejected/reasons.json": json.dumps(reasons, indent=2).encode()}


def initial_model(rt: Runtime, backend: Backend) -> tuple[GlobalModel, str, int]:
    """The round-0 global model, where it came from and the rounds earlier runs trained it
    for: the seed's fresh weights; with `init_from: latest` the newest model a finished run
    of the experiment published (fresh if there is none), so a scheduled run continues
    training, its round count, pruning schedule and client sampling, instead of restarting;
    or pretrained weights from a .safetensors file (a path or s3:// URI)."""
    source = rt.cfg.init_from
    if source == "latest" and (found := latest_global(backend, rt.cfg.experiment)):
        return found
    if source not in ("scratch", "latest"):
        return steps.init_global(rt, pretrained_weights(rt, source)), source, 0
    return steps.init_global(rt), "scratch", 0


def resume_state(
    store: RunStore, cfg: ExperimentConfig
) -> tuple[GlobalModel | None, list[RoundMetrics], int]:
    """The last published round's global model, the metrics of every round and the model's
    `rounds_before`, after checking that the run exists, is unfinished, and was started with
    the same config."""
    try:
        saved = ExperimentConfig.model_validate(yaml.safe_load(store.read("config.yaml")))
    except StoreError as error:
        raise StoreError(f"cannot resume run {store.run_id}: {error}") from None
    except (yaml.YAMLError, ValidationError) as error:
        reason = str(error).splitlines()[0]
        raise StoreError(
            f"cannot resume run {store.run_id}: {store.location}/config.yaml is corrupt "
            f"({reason}); restore it from the run's MLflow artifacts (config.yaml)"
        ) from None
    ours = flatten(cfg)
    theirs = flatten(saved)
    changed = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    if changed:
        raise StoreError(
            f"cannot resume run {store.run_id}: the config differs from the run's in "
            + ", ".join(changed)
        )
    if store.finished():
        raise StoreError(
            f"run {store.run_id} already finished (its final model is published); nothing "
            "to resume, nothing was changed"
        )
    rounds = store.published_rounds()
    if not rounds:
        return None, [], 0
    model, rounds_before = round_model(store, rounds[-1])
    return model, history_until(store, rounds[-1]), rounds_before


def final_costs(rt: Runtime, global_model: GlobalModel, state: ClientState) -> dict[str, float]:
    """Inference costs of the final model (and of the clients' personal models)."""
    personal = personal_masks(state, state.clients_with(PERSONAL)) if rt.method.personal else {}
    return rt.method.costs(global_model.weights, global_model.mask, personal.values())


def finish(
    rt: Runtime,
    store: RunStore,
    tracker: Tracker | Background,
    *,
    global_model: GlobalModel,
    history: list[RoundMetrics],
    costs: dict[str, float],
) -> None:
    """Publish the final model (compact: kept values and packed mask bits; its size and the
    dense layout's are added to `costs` as `stored_mb`, `stored_mb_dense`, and a shrunk
    model's as `stored_mb_shrunk`), metrics, inference
    costs (`Method.costs`), plots of the task's
    main metric and the export's artifacts (`engine.export.final_artifacts`; manifest last),
    log them to MLflow, and log the final MLflow model (`engine.export.log_final_model`),
    which the tracking process does meanwhile."""
    logged = log_final_model(rt, tracker, global_model=global_model, history=history)
    model = compact_model_bytes(global_model.weights, global_model.mask)
    dense = model_bytes(global_model.weights, global_model.mask)
    costs.update(stored_mb=len(model) / 1e6, stored_mb_dense=len(dense) / 1e6)  # caller's too
    extras = final_artifacts(rt, global_model)
    if SHRUNK in extras:
        costs["stored_mb_shrunk"] = len(extras[SHRUNK]) / 1e6
    final = {
        "model.safetensors": model,
        "metrics.json": metrics_bytes(history),
        "costs.json": json.dumps(costs, indent=2).encode(),
        **extras,
    }
    with tempfile.TemporaryDirectory() as scratch:
        method = rt.method.tag(rt.cfg.pruning)
        target = getattr(rt.cfg.pruning.schedule, "target", None)
        to = f" to {target:.0%}" if target is not None else ", dense"
        title = f"{rt.cfg.experiment} ({store.run_id[:8]}): {method}{to}"
        for plot in plot_run(history, Path(scratch), title, main=rt.task.main, method=method):
            final[plot.name] = plot.read_bytes()
    store.publish("", final, rounds=len(history))
    for name, data in final.items():
        tracker.log_bytes(name, data, "plots" if name.endswith(".png") else None)
    tracker.log_metrics(costs, step=len(history))
    logged()
