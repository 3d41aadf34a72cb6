"""What a round publishes to the artifact store and how it is read back, the same from both
engines: the local engine calls these in-process, the Kubeflow components from their pods. So
every run, wherever it ran, can be inspected, compared, resumed from and warm-started from."""

from __future__ import annotations

import json
import logging
import re

from fedprune.config import ExperimentConfig
from fedprune.io.s3 import open_backend
from fedprune.io.store import (
    MANIFEST,
    Backend,
    RunStore,
    StoreError,
    model_and_state,
    model_bytes,
    model_from_bytes,
    round_folder,
    rounds_before_of,
)
from fedprune.records import ClientUpdate, GlobalModel, RoundMetrics

log = logging.getLogger(__name__)


def run_store(cfg: ExperimentConfig, run_id: str) -> RunStore:
    return RunStore(open_backend(cfg.store, cfg.s3), cfg.experiment, run_id)


def metrics_bytes(history: list[RoundMetrics]) -> bytes:
    return json.dumps([m.to_json() for m in history], indent=2, allow_nan=False).encode()


def round_objects(
    global_model: GlobalModel,
    updates: list[ClientUpdate],
    metrics: RoundMetrics,
    quarantined: dict[str, bytes] | None = None,
    *,
    rounds_before: int = 0,
) -> dict[str, bytes]:
    """A round's own objects: the new global model, what each accepted client sent, the
    round's metrics (only its own: the history is the rounds' together, so the store grows
    linearly with rounds) and the `quarantined` uploads the screening rejected (the
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
            global_model.weights,
            global_model.mask,
            global_model.state,
            rounds_before=rounds_before,
        ),  # fmt: skip
        "updates.json": json.dumps(summaries, indent=2).encode(),
        "metrics.json": json.dumps(metrics.to_json(), indent=2, allow_nan=False).encode(),
        **(quarantined or {}),
    }


def round_model(store: RunStore, round_: int) -> tuple[GlobalModel, int]:
    """The global model after round `round_`, with its strategy state, and the rounds of
    earlier runs it continues (a warm start's `rounds_before`): one read of the model."""
    model = store.load_round(round_, ["model.safetensors"])["model.safetensors"]
    return GlobalModel(*model_and_state(model)), rounds_before_of(model)


def history_until(store: RunStore, round_: int) -> list[RoundMetrics]:
    """The metrics of rounds 1…`round_`, each read from its round (empty for 0)."""
    return [round_metrics(store, r) for r in range(1, round_ + 1)]


def round_metrics(store: RunStore, round_: int) -> RoundMetrics:
    raw = json.loads(store.load_round(round_, ["metrics.json"])["metrics.json"])
    return RoundMetrics.from_json(raw[-1] if isinstance(raw, list) else raw)  # a list: older


def latest_global(backend: Backend, experiment: str) -> tuple[GlobalModel, str, int] | None:
    """The most recently published global model of any finished run of `experiment` (for
    warm starts), where it came from and how many rounds it was trained for across runs
    (what the new run continues); None if no run of it has finished. A run still
    going, killed or failed is never taken: a scheduled run must not start from a model
    that diverged or is half-trained. A round that cannot be read (corrupt manifest or
    model) is skipped with a warning for the next newest: one damaged run never stops the
    scheduled runs that warm-start from the experiment."""
    pattern = re.compile(rf"^{re.escape(experiment)}/([^/]+)/rounds/(\d+)/{MANIFEST}$")
    rounds_of: dict[str, list[int]] = {}
    for key in backend.list(f"{experiment}/"):
        if match := pattern.match(key):
            rounds_of.setdefault(match[1], []).append(int(match[2]))
    newest_first: list[tuple[float, RunStore, list[int]]] = []
    for run, rounds in rounds_of.items():
        store, rounds = RunStore(backend, experiment, run), sorted(rounds, reverse=True)
        if not store.finished():
            continue
        stamp = next((s for r in rounds if (s := _published_at(store, r)) is not None), None)
        if stamp is not None:
            newest_first.append((stamp, store, rounds))
    newest_first.sort(key=lambda found: found[0], reverse=True)
    for _, store, rounds in newest_first:
        for round_ in rounds:
            try:
                model = store.load_round(round_, ["model.safetensors"])["model.safetensors"]
            except StoreError as error:
                log.warning("init_from latest: skipping round %d of run %s: %s", round_, store.run_id, error)  # fmt: skip
                continue
            # the model, not the strategy's state: the new run may aggregate with another rule
            weights, mask = model_from_bytes(model)
            trained = rounds_before_of(model) + round_
            return GlobalModel(weights, mask), f"{store.prefix}/{round_folder(round_)}", trained
    return None


def _published_at(store: RunStore, round_: int) -> float | None:
    try:
        return float(store.manifest(round_folder(round_)).get("published_at", 0.0))
    except StoreError as error:
        log.warning("init_from latest: skipping round %d of run %s: %s", round_, store.run_id, error)  # fmt: skip
        return None
