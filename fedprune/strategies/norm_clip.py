"""Norm clipping (Sun et al. 2019, "Can You Really Backdoor Federated Learning?", arXiv
1911.07963): each client's update, its model minus the previous global model, is scaled down
to an L2 norm of at most `bound` before the (mask-aware, sample-weighted) average, so no
client can move the model further than the bound however it scales its update. Sun et al. fix
the bound; by default it is each round's median update norm (the lower middle value), which
needs no tuning and clips every update above it: a minority cannot raise it.

Mask-aware: a client's update counts only the coordinates it kept (and unmasked tensors);
the clipped models are then averaged over the clients that kept each coordinate."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field

from fedprune.records import GlobalModel
from fedprune.strategies.base import STRATEGIES, Strategy, StrategyParams
from fedprune.strategies.buffers import DecodedUpdate
from fedprune.strategies.mask_aware import mask_aware_average
from fedprune.strategies.robust import blocks, tensors


class NormClipParams(StrategyParams):
    bound: float | None = Field(None, gt=0)
    """The largest L2 norm an update keeps; None: the round's median update norm."""


def update_norms(updates: Sequence[DecodedUpdate], previous: GlobalModel) -> torch.Tensor:
    """(K,) L2 norms of the clients' updates over the coordinates each kept (float64)."""
    squares = torch.zeros(len(updates), dtype=torch.float64)
    for name, values, kept in tensors(updates):
        start = previous.weights[name].reshape(-1).to(values.device)
        squares = squares.to(values.device)
        for cols in blocks(values):
            delta = torch.where(kept[:, cols], values[:, cols].double() - start[cols].double(), 0.0)
            squares += delta.square().sum(1)
    return squares.sqrt()


@STRATEGIES.register("norm_clip", NormClipParams)
class NormClip(Strategy):
    mask_aware = True
    params: NormClipParams

    def aggregate(self, updates: Sequence[DecodedUpdate], previous: GlobalModel) -> GlobalModel:
        norms = update_norms(updates, previous)
        bound = self.params.bound if self.params.bound is not None else norms.median().item()
        scales = (bound / norms.clamp_min(1e-30)).clamp(max=1.0).tolist()
        clipped = []
        for update, scale in zip(updates, scales, strict=True):
            if scale >= 1.0:  # within the bound: the update as sent, bit for bit
                clipped.append(update)
                continue
            weights = {}
            for name, value in update.weights.items():
                start = previous.weights[name].to(value.device, value.dtype)
                moved = start + scale * (value - start)
                keep = update.mask.get(name)
                weights[name] = moved if keep is None else torch.where(keep, moved, 0.0)
            clipped.append(DecodedUpdate(weights, update.mask, update.num_samples))
        return GlobalModel(*mask_aware_average(clipped))
