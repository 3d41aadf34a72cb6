"""The flat (K, P) view of a round's client models that every strategy aggregates over.

The clients' tensors are read as one flat (K, P) matrix (K clients, P numbers over all tensors):
a weighted average is then a single `coef @ stacked` GEMV over the whole model, which runs at
memory bandwidth on a GPU. When the updates already are rows of one (K, P) buffer
(`stack_updates` builds them so) that matrix is used as it is, without a copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedprune.pruning.masks import Mask, Weights

# Columns per block in mask-aware aggregation: the float copy of a block of K masks stays in
# the cache (CPU) or the L2 (GPU) instead of materialising a (K, P) float matrix.
_BLOCK_BYTES = {"cpu": 4 << 20, "cuda": 32 << 20}


@dataclass(frozen=True)
class DecodedUpdate:
    weights: Weights
    mask: Mask
    num_samples: int


def sample_weights(updates: Sequence[DecodedUpdate]) -> torch.Tensor:
    device = next(iter(updates[0].weights.values())).device
    counts = torch.tensor([u.num_samples for u in updates], dtype=torch.float64)
    return (counts / counts.sum()).to(device)


def _rows_of_one_buffer(tensors: list[list[torch.Tensor]]) -> torch.Tensor | None:
    """The (K, P) buffer whose rows hold client k's tensors back to back, in order, when the
    tensors are such views (zero-copy); else None."""
    base = tensors[0][0]._base
    if base is None or base.dim() != 2 or base.shape[0] != len(tensors):
        return None
    if not base.is_contiguous() or base.shape[1] != sum(t.numel() for t in tensors[0]):
        return None
    width, ptr, size = base.shape[1], base.data_ptr(), base.element_size()
    for k, row in enumerate(tensors):
        offset = k * width
        for t in row:
            if t._base is not base or not t.is_contiguous():
                return None
            if t.data_ptr() != ptr + offset * size:
                return None
            offset += t.numel()
    return base


def stacked(tensors: list[list[torch.Tensor]]) -> torch.Tensor:
    """tensors[k] = client k's tensors, same shapes for every k: the (K, P) matrix of them."""
    base = _rows_of_one_buffer(tensors)
    if base is not None:
        return base
    first = tensors[0]
    width = sum(t.numel() for t in first)
    out = torch.empty(len(tensors), width, dtype=first[0].dtype, device=first[0].device)
    for k, row in enumerate(tensors):
        torch.cat([t.reshape(-1) for t in row], out=out[k])
    return out


def unflatten(flat: torch.Tensor, names: list[str], like: Weights) -> Weights:
    """Views of `flat` shaped as the tensors named `names` in `like`, back to back."""
    out, offset = {}, 0
    for name in names:
        n = like[name].numel()
        out[name] = flat[offset : offset + n].view(like[name].shape)
        offset += n
    return out


def by_dtype(names: list[str], like: Weights) -> list[list[str]]:
    """`names` grouped by dtype (one flat matrix per dtype), in order of first appearance."""
    groups: dict[torch.dtype, list[str]] = {}
    for name in names:
        groups.setdefault(like[name].dtype, []).append(name)
    return list(groups.values())


def weighted_average(
    updates: Sequence[DecodedUpdate], names: list[str], coef: torch.Tensor
) -> Weights:
    """Σ_k coef_k · update_k for the named tensors: one GEMV per dtype over all of them."""
    like = updates[0].weights
    out: Weights = {}
    for group in by_dtype(names, like):
        matrix = stacked([[u.weights[n] for n in group] for u in updates])
        if not matrix.is_floating_point():  # counters (BatchNorm's): rounded float64 average
            average = (coef.double() @ matrix.double()).round().to(matrix.dtype)
        c, offset = coef.to(matrix.dtype), 0
        for name in group:  # GEMVs over column ranges of one matrix: each result its own tensor
            n, cols = like[name].numel(), slice(offset, offset + like[name].numel())
            result = c @ matrix[:, cols] if matrix.is_floating_point() else average[cols]
            out[name] = result.view(like[name].shape)
            offset += n
    return out


def stack_updates(
    weights: Sequence[Weights], masks: Sequence[Mask], num_samples: Sequence[int]
) -> list[DecodedUpdate]:
    """DecodedUpdates whose weights (and masks) are rows of one (K, P) buffer each, the form
    the rules aggregate without copying. Decoders can fill such rows in place."""
    names = list(weights[0])
    values = stacked([[w[n] for n in names] for w in weights])
    mask_names = [n for n in names if n in masks[0]]
    kept = stacked([[m[n] for n in mask_names] for m in masks]) if mask_names else None
    return [
        DecodedUpdate(
            unflatten(values[k], names, weights[0]),
            unflatten(kept[k], mask_names, masks[0]) if kept is not None else {},
            n,
        )
        for k, n in enumerate(num_samples)
    ]


def mask_aware_sums(
    values: torch.Tensor, kept: torch.Tensor, coef: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column of (K, P) `values`: Σ coef·value over the rows that kept it, and Σ coef over
    them. Two GEMVs per block of columns; the float copy of a block of masks stays in the
    cache, never a whole (K, P) float matrix."""
    share = torch.empty(values.shape[1], dtype=values.dtype, device=values.device)
    total = torch.empty_like(share)
    budget = _BLOCK_BYTES.get(values.device.type, _BLOCK_BYTES["cuda"])
    block = max(1024, budget // (values.shape[0] * values.element_size()))
    block = min(block, values.shape[1])
    keep_block = torch.empty(values.shape[0], block, dtype=values.dtype, device=values.device)
    kept_values = torch.empty_like(keep_block)
    as_bytes = kept.view(torch.uint8)  # uint8 -> float converts far faster than bool on CPU
    for start in range(0, values.shape[1], block):
        cols = slice(start, start + block)
        width = len(range(*cols.indices(values.shape[1])))
        keep, products = keep_block[:, :width], kept_values[:, :width]
        keep.copy_(as_bytes[:, cols])
        share[cols] = coef @ keep
        total[cols] = coef @ torch.mul(values[:, cols], keep, out=products)
    return total, share
