"""The local engine: every round in one process, one model object reused by all clients.

Order of a round: sample → broadcast → train clients → aggregate → server prune → evaluate →
publish (store, then MLflow). The global model is replaced only after the round was published,
so a failing round leaves the last good model in place (in memory and in the store).

Resuming needs no RNG state beyond the round number: sampling draws from (seed, round), each
client's batches from (seed, round, client), and the model's initial weights from the seed, so a
published round's global weights, mask and metrics history (and, with LotteryFL's personal
masks, the index of each client's latest personal model) are the whole state of a run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import yaml
from torch import nn

from fedprune import steps
from fedprune.compression import decode
from fedprune.config import ExperimentConfig, flatten
from fedprune.data import ImageDataset
from fedprune.methods import Method
from fedprune.parallel import ClientPool
from fedprune.partition import Partition
from fedprune.publish import (
    finish,
    held_after,
    initial_model,
    personal_after,
    personal_masks,
    round_objects,
    round_state,
)
from fedprune.steps import ClientUpdate, GlobalModel, RoundMetrics
from fedprune.store import RunStore, StoreError, open_backend
from fedprune.tracking import start_run, tracker_for


@dataclass(frozen=True)
class RunResult:
    run_id: str
    location: str
    """Where the run's artifacts are: a folder, or s3://bucket/prefix/experiment/run."""
    history: list[RoundMetrics]
    ui_hint: str
    costs: dict[str, float]
    """Inference cost of the final model per sample (`Method.costs`)."""


class Progress:
    """Callbacks the CLI uses to show progress; all optional."""

    def start(self, rounds: int, clients_per_round: int) -> None: ...
    def client_done(self, count: int = 1) -> None: ...
    def round_done(self, metrics: RoundMetrics) -> None: ...


def resume_state(
    store: RunStore, cfg: ExperimentConfig
) -> tuple[GlobalModel | None, list[RoundMetrics]]:
    """The last published round's global model and metrics, after checking that the run exists,
    is unfinished, and was started with the same config."""
    try:
        saved = yaml.safe_load(store.read("config.yaml"))
    except StoreError as error:
        raise StoreError(f"cannot resume run {store.run_id}: {error}") from None
    ours = flatten(cfg)
    theirs = flatten(ExperimentConfig.model_validate(saved))
    changed = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    if changed:
        raise StoreError(
            f"cannot resume run {store.run_id}: the config differs from the run's in "
            + ", ".join(changed)
        )
    if store.finished():
        raise StoreError(f"run {store.run_id} already finished; nothing to resume")
    rounds = store.published_rounds()
    return round_state(store, rounds[-1]) if rounds else (None, [])


def train_round(
    model: nn.Module,
    method: Method,
    pool: ClientPool | None,
    payload: bytes,
    data: ImageDataset,
    shards: Partition,
    clients: list[int],
    round_: int,
    cfg: ExperimentConfig,
    personal: dict[int, steps.Personal],
) -> Iterator[list[ClientUpdate]]:
    """The round's client updates in client order, in batches as they finish: one client at
    a time in this process, all at once when vectorised, or from the worker pool."""
    if pool is not None:
        yield from ([update] for update in pool.train(payload, clients, round_, personal))
        return
    for group in [clients] if cfg.client.vectorize else [[c] for c in clients]:
        yield steps.train_clients(
            model, method, payload, data, shards, group, round_, cfg, personal
        )


def run_experiment(
    cfg: ExperimentConfig,
    data: ImageDataset | None = None,
    progress: Progress | None = None,
    resume: str | None = None,
) -> RunResult:
    """Run (or, with `resume`, continue) an experiment; the result holds every round's metrics."""
    progress = progress or Progress()
    data = data or steps.load_data(cfg)
    shards = steps.partition_data(data, cfg)  # before any run exists: a bad split fails clean
    backend = open_backend(cfg.store, cfg.s3)  # credentials, bucket, endpoint: fail clean too
    tracker = tracker_for(cfg)
    model = steps.new_model(cfg, data)
    method = steps.pruning_method(model, data, cfg)
    if resume:
        store = RunStore(backend, cfg.experiment, resume)
        restored, history = resume_state(store, cfg)
        tracker.reopen(resume)
    else:
        store = RunStore(backend, cfg.experiment, start_run(tracker, cfg, engine="local"))
        restored, history = None, []

    pool = ClientPool(cfg, data, shards) if cfg.engine.workers > 1 else None
    try:
        if not resume:
            config_yaml = yaml.safe_dump(cfg.model_dump(), sort_keys=False).encode()
            store.write("config.yaml", config_yaml)
            store.write(
                "partition.json", json.dumps({"clients": [len(s) for s in shards]}).encode()
            )
            tracker.log_bytes("config.yaml", config_yaml)
        if restored is None:
            global_model, source = initial_model(backend, model, method, data, shards, cfg)
            tracker.set_tag("init_from", source)
        else:
            global_model = restored
        logged = tracker.logged_steps("sparsity")  # a kill can fall between store and MLflow
        for metrics in history:
            if metrics.round not in logged:
                tracker.log_metrics(metrics.flat(), step=metrics.round)
        progress.start(cfg.rounds - len(history), cfg.clients_per_round())
        for metrics in history:
            progress.round_done(metrics)
        held = held_after(store, len(history))  # client → the mask id it last received
        index = personal_after(store, len(history)) if method.personal else None
        personal = personal_masks(store, len(history), list(index)) if index else {}
        for round_ in range(len(history) + 1, cfg.rounds + 1):
            started = time.perf_counter()
            clients = steps.sample_clients(cfg, round_)
            payload = steps.broadcast(global_model, cfg)
            sent = steps.downloads(global_model, payload, clients, held, cfg, personal)
            held |= dict.fromkeys(clients, sent.mask_id)
            updates = []
            for batch in train_round(
                model, method, pool, payload, data, shards, clients, round_, cfg,
                steps.personal_starts({c: personal[c] for c in clients if c in personal}, sent),
            ):  # fmt: skip
                updates += batch
                progress.client_done(len(batch))
            combined = steps.aggregate(updates, cfg)
            candidate = steps.server_prune(combined, updates, method, round_, payload)
            metrics = steps.round_metrics(
                round_,
                candidate,
                method,
                data,
                updates,
                sent,
                time.perf_counter() - started,
                cfg,
            )
            if index is not None:
                index |= dict.fromkeys((u.client for u in updates), round_)
            objects = round_objects(candidate, updates, [*history, metrics], held, index)
            store.publish_round(round_, objects)
            global_model = candidate
            if index is not None:
                personal |= {u.client: decode(u.payload)[1] for u in updates}
            history.append(metrics)
            tracker.log_metrics(metrics.flat(), step=round_)
            progress.round_done(metrics)
        costs = method.costs(global_model.weights, global_model.mask, personal.values())
        finish(store, tracker, global_model, history, costs, cfg)
    except BaseException as error:
        tracker.abandon("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        if pool is not None:
            pool.close()
    tracker.finish()
    return RunResult(store.run_id, store.location, history, tracker.ui_hint(), costs)
