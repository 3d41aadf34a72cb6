"""Mask-aware averaging: each coordinate is the sample-weighted average over the clients
that kept it; the new mask is the union of the client masks. Unmasked tensors get plain
FedAvg. Averaging a pruned weight with zeros would shrink it; this does not."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedprune.pruning.masks import Mask, Weights
from fedprune.records import GlobalModel
from fedprune.strategies.base import STRATEGIES, Strategy
from fedprune.strategies.buffers import (
    DecodedUpdate,
    by_dtype,
    mask_aware_sums,
    sample_weights,
    stacked,
    weighted_average,
)


@STRATEGIES.register("mask_aware")
class MaskAware(Strategy):
    mask_aware = True
    from_average = True

    def aggregate(self, updates: Sequence[DecodedUpdate], previous: GlobalModel) -> GlobalModel:
        weights, mask = mask_aware_average(updates)
        return GlobalModel(weights, mask)


def mask_aware_average(updates: Sequence[DecodedUpdate]) -> tuple[Weights, Mask]:
    """Each masked coordinate's sample-weighted average over the clients that kept it (0 and
    pruned where none did); plain FedAvg for unmasked tensors. The other rules build on it."""
    like = updates[0].weights
    coef = sample_weights(updates)
    plain = [n for n in like if n not in updates[0].mask]
    weights = weighted_average(updates, plain, coef)
    mask: Mask = {}
    for group in by_dtype([n for n in like if n in updates[0].mask], like):
        values = stacked([[u.weights[n] for n in group] for u in updates])
        kept = stacked([[u.mask[n] for n in group] for u in updates])
        total, share = mask_aware_sums(values, kept, coef.to(values.dtype))
        offset = 0
        for name in group:
            cols = slice(offset, offset + like[name].numel())
            keep = share[cols] > 0
            average = torch.where(keep, total[cols] / share[cols].clamp_min(1e-30), 0.0)
            weights[name] = average.view(like[name].shape)
            mask[name] = keep.view(like[name].shape)
            offset = cols.stop
    return {n: weights[n] for n in like}, mask
