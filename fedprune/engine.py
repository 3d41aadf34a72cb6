"""The local engine: every round in one process, one model object reused by all clients.

Order of a round: sample → broadcast → train clients → aggregate → server prune → evaluate →
publish (run folder, MLflow). The global model is replaced only after the round succeeded, so
a failing round leaves the last good model in place (in memory and on disk).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from fedprune import steps
from fedprune.config import ExperimentConfig, flatten
from fedprune.data import ImageDataset, load_dataset
from fedprune.plots import plot_run
from fedprune.steps import RoundMetrics
from fedprune.store import RunFolder, model_bytes
from fedprune.tracking import Tracker


@dataclass(frozen=True)
class RunResult:
    run_id: str
    run_dir: Path
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


def run_experiment(
    cfg: ExperimentConfig,
    data: ImageDataset | None = None,
    progress: Progress | None = None,
) -> RunResult:
    progress = progress or Progress()
    data = data or load_dataset(cfg.data.dataset, None, cfg.data.train_subset, cfg.data.test_subset)
    shards = steps.partition_data(data, cfg)  # before any run exists: a bad split fails clean
    store_root = Path(cfg.store)
    tracker = Tracker(cfg.tracking, cfg.experiment, store_root / "mlartifacts")
    tags = {
        "dataset": cfg.data.dataset,
        "partition": cfg.data.partition.kind,
        "model": cfg.model.name,
        "method": f"{cfg.pruning.placement}-{cfg.pruning.schedule.kind}",
    }
    run_id = tracker.start(f"{cfg.experiment}-s{cfg.seed}", flatten(cfg), tags)
    folder = RunFolder(store_root, cfg.experiment, run_id)
    config_path = folder.write_bytes(
        "config.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False).encode()
    )
    tracker.log_artifact(config_path)

    history: list[RoundMetrics] = []
    try:
        folder.write_json("partition.json", {"clients": [len(s) for s in shards]})
        model = steps.new_model(cfg, data)
        global_model = steps.init_global(model, cfg)
        progress.start(cfg.rounds, cfg.clients_per_round())
        for round_ in range(1, cfg.rounds + 1):
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
            folder.save_round(round_, candidate.weights, candidate.mask)
            global_model = candidate
            history.append(metrics)
            folder.write_json("metrics.json", [dataclasses.asdict(m) for m in history])
            tracker.log_metrics(flat_metrics(metrics), step=round_)
            progress.round_done(metrics)
        final = folder.write_bytes(
            "model.safetensors", model_bytes(global_model.weights, global_model.mask)
        )
        tracker.log_artifact(final)
        for plot in plot_run(history, folder.path, f"{cfg.experiment} ({run_id[:8]})"):
            tracker.log_artifact(plot, "plots")
        tracker.log_artifact(folder.path / "metrics.json")
    except BaseException as error:
        tracker.finish("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    tracker.finish()
    return RunResult(run_id, folder.path, history, tracker.ui_hint())
