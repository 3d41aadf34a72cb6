"""Server aggregation rules, one small class each, chosen by name in the config.

Each rule turns the decoded client models of a round into the new global weights and mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedprune.pruning import Mask, Weights


@dataclass(frozen=True)
class DecodedUpdate:
    weights: Weights
    mask: Mask
    num_samples: int


def _sample_weights(updates: Sequence[DecodedUpdate]) -> torch.Tensor:
    device = next(iter(updates[0].weights.values())).device
    counts = torch.tensor([u.num_samples for u in updates], dtype=torch.float64)
    return (counts / counts.sum()).to(device)


def _weighted_sum(updates: Sequence[DecodedUpdate], name: str, coef: torch.Tensor):
    stacked = torch.stack([u.weights[name].reshape(-1) for u in updates])
    return (coef.to(stacked.dtype) @ stacked).view_as(updates[0].weights[name])


class Aggregator:
    def aggregate(self, updates: Sequence[DecodedUpdate]) -> tuple[Weights, Mask]:
        raise NotImplementedError


class FedAvg(Aggregator):
    """Sample-weighted average of the client models (McMahan et al. 2017).

    A coordinate pruned by some clients is averaged with their zeros, so it shrinks; the mask
    that results keeps every coordinate left non-zero."""

    def aggregate(self, updates: Sequence[DecodedUpdate]) -> tuple[Weights, Mask]:
        coef = _sample_weights(updates)
        weights = {name: _weighted_sum(updates, name, coef) for name in updates[0].weights}
        return weights, {name: weights[name] != 0 for name in updates[0].mask}


class MaskAware(Aggregator):
    """Each coordinate is the sample-weighted average over the clients that kept it; the new
    mask is the union of the client masks. Unmasked tensors get plain FedAvg."""

    def aggregate(self, updates: Sequence[DecodedUpdate]) -> tuple[Weights, Mask]:
        coef = _sample_weights(updates)
        weights: Weights = {}
        mask: Mask = {}
        for name in updates[0].weights:
            if name not in updates[0].mask:
                weights[name] = _weighted_sum(updates, name, coef)
                continue
            dtype = updates[0].weights[name].dtype
            kept = torch.stack([u.mask[name].reshape(-1) for u in updates]).to(dtype)
            values = torch.stack([u.weights[name].reshape(-1) for u in updates]) * kept
            share = coef.to(dtype) @ kept
            total = coef.to(dtype) @ values
            keep = share > 0
            shape = updates[0].weights[name].shape
            weights[name] = torch.where(keep, total / share.clamp_min(1e-30), 0.0).view(shape)
            mask[name] = keep.view(shape)
        return weights, mask


AGGREGATORS: dict[str, type[Aggregator]] = {"fedavg": FedAvg, "mask_aware": MaskAware}
