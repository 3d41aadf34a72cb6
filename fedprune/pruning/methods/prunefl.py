"""Adaptive pruning after PruneFL (Jiang et al., IEEE TNNLS 2022, arXiv 1909.12326): one
client trains the fresh model on its own data and prunes it by magnitude before round 1; every
`every` rounds the clients send the squared gradients of all parameters summed over their
local steps, and the server keeps the coordinates with the largest mean importance. Here the
density is fixed by the schedule (PruneFL also adapts it to measured timings)."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from fedprune.pruning.masks import Mask, Weights, magnitude_mask
from fedprune.pruning.methods.base import (
    METHODS,
    Method,
    Model,
    Needs,
    PruningParams,
    RoundInputs,
    Trainer,
    pruned,
)


class PruneFLParams(PruningParams):
    every: Annotated[int, Field(ge=1)] = 5
    """Importance rounds: every, 2·every, …"""
    initial_client: Annotated[int, Field(ge=0)] = 0
    """The client whose data trains the model before the initial prune."""
    initial_epochs: Annotated[int, Field(ge=1)] = 5


@METHODS.register("prunefl", PruneFLParams)
class PruneFL(Method):
    params: PruneFLParams

    @classmethod
    def needs(cls, params: PruningParams) -> Needs:
        return Needs(mask_aware=True, vectorizable=False, beyond_a_site=True, private=False)

    @classmethod
    def check(cls, params: PruneFLParams, num_clients: int) -> None:  # type: ignore[override]
        if params.initial_client >= num_clients:
            raise ValueError(
                f"pruning.initial_client ({params.initial_client}) must be < data.num_clients "
                f"({num_clients})"
            )

    def start(self, weights: Weights, mask: Mask, train: Trainer) -> Model:
        trained = train(
            self.params.initial_client, weights, mask, epochs=self.params.initial_epochs
        )
        return self.magnitude(trained, mask, round_=1)

    def wants_importance(self, round_: int) -> bool:
        return round_ % self.params.every == 0 and self.target(round_) > 0

    def server(self, weights: Weights, mask: Mask, *, round_: int, inputs: RoundInputs) -> Model:
        importance = inputs.importance
        if importance is None:
            return self.magnitude(weights, mask, round_=round_)
        everything = {name: torch.ones_like(keep) for name, keep in mask.items()}
        target = self.target(round_)
        chosen = magnitude_mask(importance, everything, target, scope=self.params.scope)
        return pruned(weights, chosen)
