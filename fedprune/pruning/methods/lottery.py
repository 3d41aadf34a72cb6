"""Iterative magnitude pruning with rewind (Frankle & Carbin 2019; in FL: LotteryFL, Li et al.
2020, arXiv 2008.03371): whenever the target rises, prune by magnitude and reset the surviving
weights to their initial values. With `personal` (LotteryFL proper) each client does this to
its own mask, when the global model is accurate enough on its data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
from pydantic import Field, model_validator

from fedprune.pruning.masks import Mask, Weights, magnitude_mask, measure_sparsity
from fedprune.pruning.methods.base import (
    METHODS,
    Method,
    MethodContext,
    Model,
    Needs,
    PruningParams,
    RoundInputs,
    pruned,
)


class LotteryParams(PruningParams):
    personal: bool = False
    """Each client keeps its own mask: when the received global model, under that mask, is
    accurate enough on the client's validation rows, the client prunes `schedule.rate` of its
    remaining weights by magnitude (never beyond the schedule's target for the round) and
    rewinds the kept ones to their initial values before training. The server averages each
    weight over the clients that kept it; the global model itself is not pruned."""
    accuracy_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    """Validation accuracy the received model must reach before a client prunes further."""
    validation_share: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    """Share of each client's rows held out (seeded) to decide when it prunes."""

    @model_validator(mode="after")
    def _iterative(self) -> LotteryParams:
        if self.personal and self.schedule.kind not in ("none", "iterative"):
            raise ValueError(
                "pruning.personal prunes `schedule.rate` at a time: it needs schedule kind "
                f"'iterative', not '{self.schedule.kind}'"
            )
        return self


@METHODS.register("lottery", LotteryParams)
class Lottery(Method):
    params: LotteryParams

    def __init__(self, params: LotteryParams, ctx: MethodContext):
        super().__init__(params, ctx)
        self.initial = {name: t.detach().clone() for name, t in ctx.model.state_dict().items()}
        self.personal = params.personal

    @classmethod
    def needs(cls, params: LotteryParams) -> Needs:  # type: ignore[override]
        personal = params.personal
        return Needs(
            mask_aware=personal,
            vectorizable=not personal,
            classification=personal,
            beyond_a_site=personal,
            private=not personal,
        )

    def client_start(
        self, weights: Weights, mask: Mask, *, round_: int, accuracy: Callable[[Weights], float]
    ) -> Model:
        received = pruned(weights, mask)
        sparsity = measure_sparsity({}, mask).sparsity
        masked = sum(keep.numel() for keep in mask.values())
        target = self.target(round_)
        at_target = (target - sparsity) * masked <= len(mask)  # rounding: ≤ 1 weight per tensor
        if at_target or accuracy(received[0]) < self.params.accuracy_threshold:
            return received
        step = 1.0 - (1.0 - sparsity) * (1.0 - self.params.schedule.rate)  # type: ignore[union-attr]
        chosen = magnitude_mask(received[0], mask, min(target, step), scope=self.params.scope)
        return pruned(self.initial, chosen)

    def server(self, weights: Weights, mask: Mask, *, round_: int, inputs: RoundInputs) -> Model:
        if self.personal:  # a weight no sampled client kept keeps its last global value
            previous = inputs.previous
            kept = {n: torch.where(keep, weights[n], previous[n]) for n, keep in mask.items()}
            return weights | kept, {n: torch.ones_like(keep) for n, keep in mask.items()}
        if self.target(round_) <= self.target(round_ - 1):
            return weights, mask
        _, mask = self.magnitude(weights, mask, round_=round_)
        return pruned(self.initial, mask)

    @classmethod
    def variant(cls, params: LotteryParams) -> str:  # type: ignore[override]
        return "-personal" if params.personal else ""
