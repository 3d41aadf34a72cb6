"""Compare finished runs from MLflow: what each method cost in bytes and what it reached.

Everything comes from the tracking server (params, tags, per-round metric histories), so runs
from the local and the Kubeflow engine, or from different machines, compare alike. Without a
metric, the runs' main metric is compared (their tag `main_metric`, e.g. `test_accuracy`, or
`test_rmse` for regression: lower is better there, tag `higher_is_better`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import accumulate

from fedprune.tracking.mlflow import TrackingError, tracking_errors

LOWER_IS_BETTER = ("loss", "rmse", "mae", "bytes_up", "bytes_down", "seconds")


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    method: str
    target_sparsity: float
    """Its schedule's target (NaN for a dense run)."""
    sparsity: float
    """The sparsity the run reached (its last round's)."""
    final: float
    best: float
    mb_uploaded: float
    rounds_to_target: int | None
    """First round whose metric reached the target; None if none did."""
    rounds_s: float
    """Seconds its rounds took (metric `seconds` summed): a resumed run's downtime is not in it."""
    cumulative_mb: list[float]
    """Cumulative MB uploaded after each round, beside `curve` (the metric per round)."""
    curve: list[float]


@dataclass(frozen=True)
class Comparison:
    metric: str
    higher_is_better: bool
    runs: list[RunSummary]
    """Best final metric first."""


def summarise(
    tracking: str, *, experiment: str | None, metric: str | None, target: float | None
) -> Comparison:
    """Finished runs of one experiment (or of all) by final `metric` (default: the first
    run's main metric)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    with tracking_errors(tracking):
        if experiment is None:
            ids = [e.experiment_id for e in client.search_experiments()]
        else:
            found = client.get_experiment_by_name(experiment)
            if found is None:
                raise TrackingError(f"no experiment '{experiment}' at {tracking}")
            ids = [found.experiment_id]
        runs = client.search_runs(ids, "attributes.status = 'FINISHED'", max_results=1000)
        tags = runs[0].data.tags if runs else {}
        main = tags.get("main_metric", "test_accuracy")
        metric = metric or main
        if metric == main:
            higher = tags.get("higher_is_better", "true") == "true"
        else:  # another metric: losses, errors and bytes are better low
            higher = not metric.endswith(LOWER_IS_BETTER)
        best, sign = (max, 1.0) if higher else (min, -1.0)
        summaries = []
        for run in runs:
            by_step = {p.step: p.value for p in client.get_metric_history(run.info.run_id, metric)}
            uploads = {
                p.step: p.value for p in client.get_metric_history(run.info.run_id, "bytes_up")
            }
            seconds = {
                p.step: p.value for p in client.get_metric_history(run.info.run_id, "seconds")
            }
            if not by_step:
                continue
            steps = sorted(by_step)
            curve = [by_step[s] for s in steps]
            reached = [s for s in steps if target is not None and sign * (by_step[s] - target) >= 0]
            summaries.append(
                RunSummary(
                    run_id=run.info.run_id,
                    method=run.data.tags.get("method", "?"),
                    target_sparsity=float(run.data.params.get("pruning.schedule.target", math.nan)),
                    sparsity=run.data.metrics.get("sparsity", math.nan),
                    final=curve[-1],
                    best=best(curve),
                    mb_uploaded=sum(uploads.values()) / 1e6,
                    rounds_to_target=reached[0] if reached else None,
                    rounds_s=sum(seconds.values()),
                    cumulative_mb=[b / 1e6 for b in accumulate(uploads.get(s, 0.0) for s in steps)],
                    curve=curve,
                )
            )
    if not summaries:
        where = f"experiment '{experiment}'" if experiment else "any experiment"
        raise TrackingError(f"no finished runs with metric '{metric}' in {where} at {tracking}")
    ordered = sorted(summaries, key=lambda s: (-sign * s.final, s.mb_uploaded))
    return Comparison(metric, higher, ordered)
