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
from fedprune.strategies.robust import update_norms


class NormClipParams(StrategyParams):
    bound: float | None = Field(None, gt=0)
    """The largest L2 norm an update keeps; None: the round's median update norm."""


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
                if not value.is_floating_point():  # counters (BatchNorm's): as sent
                    weights[name] = value
                    continue
                start = previous.weights[name].to(value.device, value.dtype)
                moved = start + scale * (value - start)
                keep = update.mask.get(name)
                weights[name] = moved if keep is None else torch.where(keep, moved, 0.0)
            clipped.append(DecodedUpdate(weights, update.mask, update.num_samples))
        return GlobalModel(*mask_aware_average(clipped))
