"""Callbacks the tests name by import path (`callbacks: [tests.callbacks:...]`)."""

from __future__ import annotations

from fedprune.engine.callbacks import RoundContext


def kept_weights_and_uploads(ctx: RoundContext) -> dict[str, float]:
    """The global model's largest kept |w| and kept-weight count, and the round's mean upload
    size (order-free reductions: the same bits in every process)."""
    model = ctx.global_model
    kept = [model.weights[n][keep] for n, keep in model.mask.items()]
    return {
        "max_abs_kept_weight": max(float(w.abs().max()) for w in kept if w.numel()),
        "kept_weights": sum(w.numel() for w in kept),
        "mean_upload_bytes": sum(len(u.payload) for u in ctx.updates) / len(ctx.updates),
    }


def not_a_dict(ctx: RoundContext) -> list[float]:
    return [1.0]


def takes_a_built_in_name(ctx: RoundContext) -> dict[str, float]:
    return {"test_accuracy": 1.0}
