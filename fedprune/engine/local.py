"""The local engine: every round in one process, one model object reused by all clients.

Each round goes through the round driver (`fedprune.engine.round`), as in the Kubeflow
components. The global model is replaced only after the round was published, so a failing
round leaves the last good model in place (in memory and in the store).

Resuming needs no RNG state beyond the round number: sampling draws from (seed, round), each
client's batches from (seed, round, client), and the model's initial weights from the seed, so a
published round's global weights, mask, metrics history and clients' state are the whole state
of a run.
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from fedprune import steps
from fedprune.config import ExperimentConfig
from fedprune.engine.callbacks import load_callbacks
from fedprune.engine.export import check_export
from fedprune.engine.pool import ClientPool
from fedprune.engine.round import (
    client_starts,
    conclude_round,
    final_costs,
    finish,
    initial_model,
    plan_round,
    resume_state,
)
from fedprune.errors import RunInterrupted, signal_of
from fedprune.io.s3 import open_backend
from fedprune.io.state import ClientState
from fedprune.io.store import Backend, LocalBackend, RunStore, StoreError, folder_problem
from fedprune.privacy.config import PrivacyError
from fedprune.records import ClientUpdate, GlobalModel, RoundMetrics, RoundPlan
from fedprune.tasks.datasets import FederatedData
from fedprune.tracking.background import Background
from fedprune.tracking.runs import artifact_root, run_spec


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


def train_round(
    rt: steps.Runtime, pool: ClientPool | None, plan: RoundPlan, *, state: ClientState
) -> Iterator[list[ClientUpdate]]:
    """The round's client updates in client order, in batches as they finish: one client at
    a time in this process, all at once when vectorised, or from the worker pool."""
    payload, personal = plan.payload, client_starts(rt, state, plan, clients=plan.clients)
    if pool is not None:
        yield from (
            [u]
            for u in pool.train(payload, plan.clients, round_=plan.model_round, personal=personal)
        )
        return
    groups = [plan.clients] if rt.cfg.client.vectorize else [[c] for c in plan.clients]
    for group in groups:
        yield steps.train_clients(rt, payload, group, round_=plan.model_round, personal=personal)


def report_skipped(rt: steps.Runtime, tracking: Background, global_model: GlobalModel) -> None:
    """Say which weight tensors the pruning method leaves dense (MLflow tag `pruning.skipped`
    and a warning), so a user's model with layers it does not understand is not a surprise."""
    skipped = rt.method.skipped(global_model.mask)
    tracking.set_tag("pruning.skipped", ", ".join(skipped)[:5000] or "none")
    if skipped:
        logging.getLogger(__name__).warning(
            "pruning method '%s' leaves these weights dense (layers it cannot prune): %s",
            rt.cfg.pruning.method,
            ", ".join(skipped),
        )


def check_folders(cfg: ExperimentConfig, backend: Backend) -> None:
    """Before any run exists: the store's folder and the SQLite database's can be written."""
    folders = {"store": backend.root} if isinstance(backend, LocalBackend) else {}
    if cfg.tracking.startswith("sqlite:///"):
        folders["tracking"] = Path(cfg.tracking.removeprefix("sqlite:///")).parent
    for key, folder in folders.items():
        if problem := folder_problem(folder):
            raise StoreError(f"{key}: cannot write under {folder}: {problem}")


def run_experiment(
    cfg: ExperimentConfig,
    *,
    data: FederatedData | None = None,
    progress: Progress | None = None,
    resume: str | None = None,
    run_name: str | None = None,
) -> RunResult:
    """Run (or, with `resume`, continue) an experiment; the result holds every round's metrics.
    `run_name` names the MLflow run (default: method, target and short id).

    MLflow opens in a process of its own (`fedprune.tracking.background`) while the initial
    model is built and round 1 trains; the run's store folder is named by the MLflow run id,
    so the first publish waits for it."""
    progress = progress or Progress()
    callbacks = load_callbacks(cfg.callbacks)
    check_export(cfg)
    rt = steps.Runtime.build(cfg, data=data)  # before any run exists: a bad split fails clean
    backend = open_backend(cfg.store, cfg.s3)  # credentials, bucket, endpoint: fail clean too
    check_folders(cfg, backend)
    store, restored, history, rounds_before = None, None, [], 0
    if resume:
        store = RunStore(backend, cfg.experiment, resume)
        restored, history, rounds_before = resume_state(store, cfg)
    opening = {"reopen": resume} if resume else {"start": run_spec(cfg, "local", run_name)}
    tracking = Background(cfg.tracking, cfg.experiment, artifact_root(cfg), opening)
    if cfg.export.mlflow_model:
        tracking.prepare_model_logging()
    pool = ClientPool(rt) if cfg.engine.workers > 1 else None
    try:
        if restored is None:
            global_model, source, rounds_before = initial_model(rt, backend)
            tracking.set_tag("init_from", source)
            tracking.set_tag("rounds_before", str(rounds_before))
            report_skipped(rt, tracking, global_model)
            assert rt.data is not None
            tracking.log_input(rt.data.name, rt.data.digest(), rt.data.name, "training")
        else:
            global_model = restored
        relog(tracking, history)  # a kill can fall between store and MLflow
        last = within_budget(rt, tracking, rounds_before)
        progress.start(last - len(history), cfg.clients_per_round())
        for metrics in history:
            progress.round_done(metrics)
        state = ClientState.after(store, len(history)) if store else ClientState()
        for round_ in range(len(history) + 1, last + 1):
            plan = plan_round(rt, global_model, state, round_=round_, rounds_before=rounds_before)
            updates = []
            for batch in train_round(rt, pool, plan, state=state):
                updates += batch
                progress.client_done(len(batch))
            rejected = steps.screen(updates, global_model, cfg, rt.held_rows)
            kept = steps.accepted(updates, rejected)
            combined = steps.aggregate(kept, cfg, global_model, round_=plan.model_round)
            candidate = steps.server_prune(
                combined.model, kept, rt.method, round_=plan.model_round, broadcast=plan.payload
            )
            store = store or new_run_store(rt, backend, tracking)
            metrics = conclude_round(
                rt,
                plan,
                updates=updates,
                candidate=candidate,
                state=state,
                history=history,
                store=store,
                callbacks=callbacks,
                rejected=rejected,
                secure=combined.secure,
            )
            if rejected:
                tracking.set_tag(
                    f"rejected.round_{round_:04d}", json.dumps(metrics.rejected)[:5000]
                )
            global_model = candidate
            history.append(metrics)
            tracking.log_metrics(metrics.flat(), step=round_)
            progress.round_done(metrics)
        store = store or new_run_store(rt, backend, tracking)  # a resume with no round left
        tracking.drain()  # MLflow has every round before the run is published finished
        costs = final_costs(rt, global_model, state)
        finish(rt, store, tracking, global_model=global_model, history=history, costs=costs)
        tracking.finish()
    except BaseException as error:
        tracking.abandon("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        if isinstance(error, KeyboardInterrupt):
            raise interrupted(error, store, len(history)) from None
        raise
    finally:
        tracking.close()
        if pool is not None:
            pool.close()
    return RunResult(store.run_id, store.location, history, tracking.ui_hint(), costs)


def within_budget(rt: steps.Runtime, tracking: Background, rounds_before: int) -> int:
    """The last round `privacy.target_epsilon` allows (`rounds` without one); fewer are
    announced (a warning, MLflow tag `privacy.stopped_after`), none is an error."""
    last = rt.rounds_allowed(rounds_before)
    target = rt.cfg.privacy.target_epsilon
    if last == 0:
        raise PrivacyError(
            f"privacy.target_epsilon {target}: the model's {rounds_before} earlier rounds "
            "(init_from) and this run's first would exceed it; nothing was trained (raise "
            "privacy.noise_multiplier, or start from scratch)"
        )
    if last < rt.cfg.rounds:
        tracking.set_tag("privacy.stopped_after", str(last))
        logging.getLogger(__name__).warning(
            "privacy.target_epsilon %s allows %d of the %d rounds: the run stops after round "
            "%d and publishes that model",
            target, last, rt.cfg.rounds, last,
        )  # fmt: skip
    return last


def interrupted(error: KeyboardInterrupt, store: RunStore | None, rounds: int) -> RunInterrupted:
    """What a signal left: the rounds published whole (the one in flight is dropped) and how
    to continue."""
    number = signal_of(error)
    name = signal.Signals(number).name
    if store is None:
        return RunInterrupted(f"stopped by {name} before round 1 was published", number)
    kept = f"rounds 1–{rounds} of run {store.run_id} are" if rounds else "no round is yet"
    return RunInterrupted(
        f"stopped by {name}: {kept} published, the run is marked KILLED; continue it with "
        f"`fedprune run CONFIG --resume {store.run_id}`",
        number,
    )


def relog(tracking: Background, history: list[RoundMetrics]) -> None:
    """Log the rounds of `history` MLflow lacks (a resumed run killed between the two)."""
    if not history:
        return
    logged = tracking.logged_steps("sparsity")
    for metrics in history:
        if metrics.round not in logged:
            tracking.log_metrics(metrics.flat(), step=metrics.round)


def new_run_store(rt: steps.Runtime, backend: Backend, tracking: Background) -> RunStore:
    """The new run's store folder, named by its MLflow run id, with its config and split."""
    store = RunStore(backend, rt.cfg.experiment, tracking.run_id)
    config_yaml = yaml.safe_dump(rt.cfg.model_dump(), sort_keys=False).encode()
    store.write("config.yaml", config_yaml)
    assert rt.shards is not None
    store.write("partition.json", json.dumps({"clients": [len(s) for s in rt.shards]}).encode())
    tracking.log_bytes("config.yaml", config_yaml)
    return store
