"""Masks and unstructured magnitude pruning.

Masks are boolean tensors kept beside the weights (True = kept), as in `torch.nn.utils.prune`.
Magnitude pruning keeps the largest |w|
(Han et al. 2015; the source document's formula, which keeps the small ones, is wrong).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

Weights = dict[str, torch.Tensor]
Mask = dict[str, torch.Tensor]


RUNNING_STATISTICS = ("running_mean", "running_var")
"""BatchNorm's buffers: statistics of the data, never pruned by magnitude (a small running
variance is not an unimportant weight); structured pruning removes them with their channel."""


def prunable_names(
    weights: Weights, include_bias_and_norm: bool = False, *, statistics: bool = False
) -> list[str]:
    """Weight matrices and conv kernels; biases and norm parameters (1-D) only on request,
    running statistics only with `statistics` (a channel removed with everything it owns)."""
    return [
        name
        for name, tensor in weights.items()
        if tensor.is_floating_point()
        and (tensor.dim() > 1 or include_bias_and_norm)
        and (statistics or not name.endswith(RUNNING_STATISTICS))
    ]


def full_mask(weights: Weights, names: Iterable[str]) -> Mask:
    return {name: torch.ones_like(weights[name], dtype=torch.bool) for name in names}


def _l1_mask(values: torch.Tensor, keep: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Drop the `sparsity` share with the smallest |value|; never revive what `keep` dropped.

    Already-dropped entries rank below every kept one, even a kept exact zero (a weight
    just grown by PruneFL), so the result has exactly round(sparsity · N) zeros.
    (`torch.nn.utils.prune.L1Unstructured` ranks by |value| alone and could drop a kept zero
    instead of an entry that is already gone.)"""
    amount = round(sparsity * values.numel())
    rank = torch.where(keep, values.abs(), -1.0).reshape(-1)
    new = torch.ones_like(rank, dtype=torch.bool)
    new[torch.topk(rank, amount, largest=False).indices] = False
    return new.view_as(keep) & keep


def magnitude_mask(weights: Weights, mask: Mask, sparsity: float, *, scope: str) -> Mask:
    """A new mask at `sparsity` over the masked tensors, globally or per layer."""
    if scope == "layerwise":
        return {name: _l1_mask(weights[name], keep, sparsity) for name, keep in mask.items()}
    names = list(mask)
    flat = torch.cat([weights[name].reshape(-1) for name in names])
    keep = torch.cat([mask[name].reshape(-1) for name in names])
    pieces = _l1_mask(flat, keep, sparsity).split([mask[name].numel() for name in names])
    return {name: piece.view_as(mask[name]) for name, piece in zip(names, pieces, strict=True)}


def apply_mask_(weights: Weights, mask: Mask) -> None:
    """Zero every pruned coordinate, in place."""
    with torch.no_grad():
        for name, keep in mask.items():
            weights[name].mul_(keep)


@dataclass(frozen=True)
class SparsityReport:
    sparsity: float
    """Share of the masked parameters the mask removed."""
    nonzero: int
    """Non-zero parameters in the whole model (a kept weight can be exactly 0, e.g. one
    PruneFL just grew)."""
    total: int
    per_layer: dict[str, float]


def measure_sparsity(weights: Weights, mask: Mask) -> SparsityReport:
    removed = {name: int((~keep).sum()) for name, keep in mask.items()}
    masked = sum(keep.numel() for keep in mask.values())
    return SparsityReport(
        sparsity=sum(removed.values()) / masked if masked else 0.0,
        nonzero=sum(int(t.count_nonzero()) for t in weights.values()),
        total=sum(t.numel() for t in weights.values()),
        per_layer={name: removed[name] / keep.numel() for name, keep in mask.items()},
    )
