"""Federated dynamic sparse training (Bibikar et al., AAAI 2022, arXiv 2112.09824): sparse
from round 0; in readjustment rounds each client drops its smallest kept weights halfway
through local training and regrows as many where the dense gradient is largest (RigL, Evci et
al. 2020); the server aggregates (union of masks) and prunes back to the target by magnitude,
so sparsity stays constant while the mask moves. Sparsity is per layer (the same share in
every layer, as in FedDST's uniform setting): a global cut of the untrained model would empty
the widest layer, whose initial weights are the smallest."""

from __future__ import annotations

import math
from typing import Annotated

import torch
from pydantic import Field

from fedprune.pruning.masks import Mask, Weights
from fedprune.pruning.methods.base import (
    METHODS,
    Method,
    Model,
    Needs,
    PruningParams,
    RoundInputs,
    Trainer,
)
from fedprune.training.local import Regrowth


class FedDSTParams(PruningParams):
    every: Annotated[int, Field(ge=1)] = 5
    """Mask readjustment rounds: every, 2·every, …"""
    fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    """Share of each layer's kept weights a client drops and regrows (cosine-decayed over
    the rounds, as in RigL)."""


@METHODS.register("feddst", FedDSTParams)
class FedDST(Method):
    params: FedDSTParams

    @classmethod
    def needs(cls, params: PruningParams) -> Needs:
        return Needs(mask_aware=True, vectorizable=False, private=False)

    def start(self, weights: Weights, mask: Mask, train: Trainer) -> Model:
        return self.magnitude(weights, mask, round_=1, scope="layerwise")

    def regrowth(self, round_: int, steps: int) -> Regrowth | None:
        if round_ % self.params.every or self.target(round_) == 0:
            return None
        decay = 0.5 * (1.0 + math.cos(math.pi * (round_ - 1) / self.ctx.rounds))
        share = self.params.fraction * decay
        return Regrowth(
            at_step=steps // 2, adjust=lambda w, g, m: prune_and_regrow(w, g, m, share=share)
        )

    def server(self, weights: Weights, mask: Mask, *, round_: int, inputs: RoundInputs) -> Model:
        return self.magnitude(weights, mask, round_=round_, scope="layerwise")


def prune_and_regrow(weights: Weights, grads: Weights, mask: Mask, *, share: float) -> Mask:
    """Per tensor: drop `share` of the kept weights with the smallest |w|, then keep as many
    new ones where |gradient| is largest among those not kept before."""
    new = {}
    for name, keep in mask.items():
        kept = int(keep.sum())
        count = min(round(share * kept), keep.numel() - kept)
        if count == 0:
            new[name] = keep
            continue
        flat_keep = keep.reshape(-1)
        magnitude = torch.where(flat_keep, weights[name].reshape(-1).abs(), math.inf)
        dropped = torch.topk(magnitude, count, largest=False).indices
        growth = torch.where(flat_keep, -math.inf, grads[name].reshape(-1).abs())
        grown = torch.topk(growth, count).indices
        flat = flat_keep.clone()
        flat[dropped] = False
        flat[grown] = True
        new[name] = flat.view_as(keep)
    return new
