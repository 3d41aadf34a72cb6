"""Trackers and MLflow runs from an experiment's config: where artifacts go, the run's name,
params (the flattened config) and tags (for filtering and `fedprune compare`)."""

from __future__ import annotations

from pathlib import Path

from fedprune.config import ExperimentConfig, flatten
from fedprune.pruning.methods import METHODS
from fedprune.tasks.objectives import TASKS
from fedprune.tracking.mlflow import Tracker


def artifact_root(cfg: ExperimentConfig) -> Path:
    """MLflow artifacts of an embedded (SQLite) tracking store live beside its database."""
    if cfg.tracking.startswith("sqlite:///"):
        return Path(cfg.tracking.removeprefix("sqlite:///")).parent / "mlartifacts"
    return Path(cfg.store) / "mlartifacts"


def tracker_for(cfg: ExperimentConfig) -> Tracker:
    return Tracker(cfg.tracking, cfg.experiment, artifact_root(cfg))


def run_spec(
    cfg: ExperimentConfig, engine: str, name: str | None = None
) -> tuple[str, dict[str, str], dict[str, str], bool]:
    """The run's name, params, tags, and whether MLflow's short run id is appended to the
    name. Without `name` (`fedprune run --run-name`) the name says the method and its target
    (`magnitude-server-90%-1a2b3c4d`, `dense-1a2b3c4d`), short enough that the MLflow runs
    table and chart legends show the target before they cut a name off; the schedule is in
    the `method` tag. Params are the flattened config less what cannot apply to the run:
    the Kubeflow settings of a local run, the S3 settings of a run that uses no S3."""
    task = TASKS.get(cfg.task.kind)
    registered = METHODS.get(cfg.pruning.method)
    method = registered.tag(cfg.pruning)
    target = getattr(cfg.pruning.schedule, "target", None)
    tags = {
        "dataset": cfg.data.dataset,
        "partition": cfg.data.partition.kind,
        "model": cfg.model.name,
        "method": method,
        "sparsity_target": "dense" if target is None else f"{target:.0%}",
        "strategy": cfg.aggregation.method,
        "engine": engine,
        "task": cfg.task.kind,
        "main_metric": f"test_{task.main}",
        "higher_is_better": str(task.higher_is_better).lower(),
    }
    params = flatten(cfg)
    uses_s3 = any(value.startswith("s3://") for value in params.values())
    left_out = ("kubeflow.",) if engine == "local" else ()
    left_out += () if uses_s3 else ("s3.",)
    params = {k: v for k, v in params.items() if not k.startswith(left_out)}
    kind = f"{cfg.pruning.method}{registered.variant(cfg.pruning)}"  # the schedule is a tag
    default = "dense" if target is None else f"{kind}-{tags['sparsity_target']}"
    return name or default, params, tags, name is None


def start_run(tracker: Tracker, cfg: ExperimentConfig, engine: str) -> str:
    """Start the experiment's MLflow run."""
    return tracker.start(*run_spec(cfg, engine))


def end_on_signals(cfg: ExperimentConfig, run_id: str) -> None:
    """In a pod: SIGTERM (Kubernetes stopping it, e.g. a cancelled pipeline run) or SIGINT
    marks the MLflow run KILLED and exits with 128 + the signal, well within the default 30 s
    grace period. What the pod was writing is dropped: a round reaches the store whole
    (manifest last) or not at all, and KFP keeps a failed step's outputs from the next."""
    import signal

    def stop(number: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: Kubernetes may send it again
        tracker_for(cfg).attach(run_id).abandon("KILLED")
        raise SystemExit(128 + number)

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stop)
