"""A round's metrics: the new global model tested (on test rounds), and what the round cost
in bytes and seconds."""

from __future__ import annotations

import math

import numpy as np

from fedprune.io.codec import decode, floor_bits
from fedprune.privacy.accounting import worst_epsilon
from fedprune.privacy.central import CLIP
from fedprune.pruning.masks import measure_sparsity
from fedprune.records import ClientUpdate, Downloads, GlobalModel, RoundMetrics
from fedprune.steps.runtime import Runtime
from fedprune.training.local import Evaluation
from fedprune.training.local import evaluate as evaluate_model


def evaluate(rt: Runtime, global_model: GlobalModel, site: str | None = None) -> Evaluation:
    """The task's metrics and loss of the global model, as it runs (physically pruned, for
    structured pruning), on the server's test set or on `site`'s own."""
    assert rt.data is not None, "evaluation needs the data"
    served = rt.method.served(global_model.weights, global_model.mask)
    x, y = rt.data.site_tests[site] if site else (rt.data.x_test, rt.data.y_test)
    return evaluate_model(served, x, y, batch_size=rt.cfg.eval.batch_size, task=rt.task)


def spent_epsilon(rt: Runtime, rounds: int) -> float:
    """ε at `privacy.delta` after `rounds` rounds of the model's training (NaN without DP)."""
    privacy = rt.cfg.privacy
    if not privacy.private or (privacy.mechanism == "local" and rt.held_rows is None):
        return math.nan  # a pod that holds no client's row counts cannot tell local DP's ε
    costs = rt.privacy_costs()
    return worst_epsilon(costs, rounds, delta=privacy.delta, accountant=privacy.accountant)


def is_test_round(round_: int, rounds: int, every: int) -> bool:
    return round_ % every == 0 or round_ == rounds


def round_metrics(
    rt: Runtime,
    round_: int,
    global_model: GlobalModel,
    *,
    updates: list[ClientUpdate],
    sent: Downloads,
    seconds: float,
    model_round: int,
) -> RoundMetrics:
    """Evaluate the new global model (on test rounds) and add what the round cost in bytes
    and seconds; the target is the schedule's at `model_round` (`RoundPlan.model_round`)."""
    untested = Evaluation(loss=math.nan, metrics={})
    tested = is_test_round(round_, rt.cfg.rounds, rt.cfg.eval.every)
    result = evaluate(rt, global_model) if tested else untested
    sites = rt.data.site_tests if tested and rt.data is not None else {}
    site_test = {site: evaluate(rt, global_model, site).metrics for site in sites}
    report = measure_sparsity(global_model.weights, global_model.mask)
    samples = sum(u.num_samples for u in updates)
    bytes_up = sum(u.bytes_up for u in updates)
    importance_up = sum(len(u.importance) for u in updates)
    floor_up = sum(floor_bits(u.payload) for u in updates) / 8
    bytes_down = sent.bytes
    floor_down = sent.floor_bytes
    personal = {}
    if rt.method.personal:
        kept = [measure_sparsity(*decode(u.payload)).sparsity for u in updates]
        personal = {
            "personal_accuracy": sum(u.personal_accuracy * u.num_samples for u in updates)
            / samples,
            "personal_sparsity": float(np.mean(kept)),
        }
    return RoundMetrics(
        round=round_,
        test=result.metrics,
        site_test=site_test,
        test_loss=result.loss,
        train_loss=sum(u.train_loss * u.num_samples for u in updates) / samples
        if samples
        else math.nan,
        clients=len(updates),
        epsilon=spent_epsilon(rt, model_round),
        clip=float(global_model.state[CLIP]) if CLIP in global_model.state else math.nan,
        sparsity=report.sparsity,
        target_sparsity=rt.method.target(model_round),
        nonzero_params=report.nonzero,
        total_params=report.total,
        bytes_up=bytes_up,
        bytes_down=bytes_down,
        seconds=seconds,
        layer_sparsity=report.per_layer,
        floor_bytes_up=floor_up,
        floor_bytes_down=floor_down,
        floor_ratio_up=(bytes_up - importance_up) / floor_up if floor_up else math.nan,
        floor_ratio_down=bytes_down / floor_down if floor_down else math.nan,
        values_only_downloads=sent.values_only,
        importance_bytes_up=importance_up,
        **personal,
    )
