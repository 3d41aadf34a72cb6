"""The local engine: every round in one process, one model object reused by all clients.

Order of a round: sample → broadcast → train clients → aggregate → server prune → evaluate →
publish (store, then MLflow). The global model is replaced only after the round was published,
so a failing round leaves the last good model in place (in memory and in the store).

Resuming needs no RNG state beyond the round number: sampling draws from (seed, round), each
client's batches from (seed, round, client), and the model's initial weights from the seed, so a
published round's global weights, mask and metrics history are the whole state of a run.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from fedprune import steps
from fedprune.config import ExperimentConfig, flatten
from fedprune.data import ImageDataset, load_dataset
from fedprune.plots import plot_run
from fedprune.steps import GlobalModel, RoundMetrics
from fedprune.store import RunStore, StoreError, model_bytes, model_from_bytes, open_backend
from fedprune.tracking import Tracker


@dataclass(frozen=True)
class RunResult:
    run_id: str
    location: str
    """Where the run's artifacts are: a folder, or s3://bucket/prefix/experiment/run."""
    history: list[RoundMetrics]
    ui_hint: str


class Progress:
    """Callbacks the CLI uses to show progress; all optional."""

    def start(self, rounds: int, clients_per_round: int) -> None: ...
    def client_done(self) -> None: ...
    def round_done(self, metrics: RoundMetrics) -> None: ...


def flat_metrics(m: RoundMetrics) -> dict[str, float]:
    values = {
        k: v for k, v in dataclasses.asdict(m).items() if k not in ("round", "layer_sparsity")
    }
    values.update({f"layer_sparsity.{k}": v for k, v in m.layer_sparsity.items()})
    return values


def local_artifact_root(cfg: ExperimentConfig) -> Path:
    """MLflow artifacts of an embedded (SQLite) tracking store live beside its database."""
    if cfg.tracking.startswith("sqlite:///"):
        return Path(cfg.tracking.removeprefix("sqlite:///")).parent / "mlartifacts"
    return Path(cfg.store) / "mlartifacts"


def round_objects(
    global_model: GlobalModel, updates: list[steps.ClientUpdate], history: list[RoundMetrics]
) -> dict[str, bytes]:
    """What a round publishes: the new global model, what each client sent, and the metrics
    history so far (the state a resume continues from)."""
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
        "model.safetensors": model_bytes(global_model.weights, global_model.mask),
        "updates.json": json.dumps(summaries, indent=2).encode(),
        "metrics.json": json.dumps([dataclasses.asdict(m) for m in history], indent=2).encode(),
    }


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
    if not rounds:
        return None, []
    objects = store.load_round(rounds[-1])
    weights, mask = model_from_bytes(objects["model.safetensors"])
    history = [RoundMetrics(**m) for m in json.loads(objects["metrics.json"])]
    return GlobalModel(weights, mask), history


def run_experiment(
    cfg: ExperimentConfig,
    data: ImageDataset | None = None,
    progress: Progress | None = None,
    resume: str | None = None,
) -> RunResult:
    """Run (or, with `resume`, continue) an experiment; the result holds every round's metrics."""
    progress = progress or Progress()
    data = data or load_dataset(cfg.data.dataset, None, cfg.data.train_subset, cfg.data.test_subset)
    shards = steps.partition_data(data, cfg)  # before any run exists: a bad split fails clean
    backend = open_backend(cfg.store, cfg.s3)  # credentials, bucket, endpoint: fail clean too
    tracker = Tracker(cfg.tracking, cfg.experiment, local_artifact_root(cfg))
    model = steps.new_model(cfg, data)
    if resume:
        store = RunStore(backend, cfg.experiment, resume)
        restored, history = resume_state(store, cfg)
        tracker.reopen(resume)
    else:
        tags = {
            "dataset": cfg.data.dataset,
            "partition": cfg.data.partition.kind,
            "model": cfg.model.name,
            "method": f"{cfg.pruning.placement}-{cfg.pruning.schedule.kind}",
        }
        run_id = tracker.start(f"{cfg.experiment}-s{cfg.seed}", flatten(cfg), tags)
        store = RunStore(backend, cfg.experiment, run_id)
        restored, history = None, []

    try:
        if not resume:
            config_yaml = yaml.safe_dump(cfg.model_dump(), sort_keys=False).encode()
            store.write("config.yaml", config_yaml)
            store.write(
                "partition.json", json.dumps({"clients": [len(s) for s in shards]}).encode()
            )
            tracker.log_bytes("config.yaml", config_yaml)
        global_model = restored or steps.init_global(model, cfg)
        logged = tracker.logged_steps("test_accuracy")  # a kill can fall between store and MLflow
        for metrics in history:
            if metrics.round not in logged:
                tracker.log_metrics(flat_metrics(metrics), step=metrics.round)
        progress.start(cfg.rounds - len(history), cfg.clients_per_round())
        for metrics in history:
            progress.round_done(metrics)
        for round_ in range(len(history) + 1, cfg.rounds + 1):
            started = time.perf_counter()
            clients = steps.sample_clients(cfg, round_)
            payload = steps.broadcast(global_model, cfg)
            updates = []
            for client in clients:
                updates += steps.train_clients(model, payload, data, shards, [client], round_, cfg)
                progress.client_done()
            candidate = steps.server_prune(steps.aggregate(updates, cfg), round_, cfg)
            metrics = steps.round_metrics(
                round_,
                candidate,
                model,
                data,
                updates,
                len(payload) * len(clients),
                time.perf_counter() - started,
                cfg,
            )
            store.publish_round(round_, round_objects(candidate, updates, [*history, metrics]))
            global_model = candidate
            history.append(metrics)
            tracker.log_metrics(flat_metrics(metrics), step=round_)
            progress.round_done(metrics)
        finish(store, tracker, global_model, history, cfg)
    except BaseException as error:
        tracker.abandon("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    tracker.finish()
    return RunResult(store.run_id, store.location, history, tracker.ui_hint())


def finish(
    store: RunStore,
    tracker: Tracker,
    global_model: GlobalModel,
    history: list[RoundMetrics],
    cfg: ExperimentConfig,
) -> None:
    """Publish the final model, metrics and plots (manifest last) and log them to MLflow."""
    final = {
        "model.safetensors": model_bytes(global_model.weights, global_model.mask),
        "metrics.json": json.dumps([dataclasses.asdict(m) for m in history], indent=2).encode(),
    }
    with tempfile.TemporaryDirectory() as scratch:
        for plot in plot_run(history, Path(scratch), f"{cfg.experiment} ({store.run_id[:8]})"):
            final[plot.name] = plot.read_bytes()
    store.publish("", final, rounds=len(history))
    for name, data in final.items():
        tracker.log_bytes(name, data, "plots" if name.endswith(".png") else None)
