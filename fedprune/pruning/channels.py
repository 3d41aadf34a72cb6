"""Structured (channel) pruning: whole output channels of conv layers and neurons of linear
layers, ranked by L2 norm (Li et al. 2017, arXiv 1608.08710), then physically removed.

During FL the model keeps its full shape and a mask that zeroes the removed channels and
everything coupled to them (the channel's bias, the next layer's input columns); which
parameters are coupled comes from torch-pruning's dependency graph (Fang et al. 2023,
arXiv 2301.12900), not from hand-written rules. `shrink` builds the physically smaller
model from that mask; it computes the same outputs as the masked full model with fewer
FLOPs, and clients train it instead of the full one.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from fedprune.pruning.masks import Mask, Weights


@dataclass(frozen=True)
class Coupling:
    """Along `dim` of parameter `name`, `owner[i]` is the root channel that index i is removed
    with (-1: none)."""

    name: str
    dim: int
    owner: torch.Tensor


@dataclass
class ChannelGraph:
    """A model's prunable channels: the root layers (every conv/linear but the last, the
    classifier)
    and, per root, the parameter slices torch-pruning couples to each of its channels."""

    model: nn.Module
    input_shape: tuple[int, ...]
    roots: dict[str, list[Coupling]]

    @classmethod
    def of(cls, model: nn.Module, input_shape: tuple[int, ...]) -> ChannelGraph:
        model = copy.deepcopy(model)
        graph = tp.DependencyGraph().build_dependency(
            model, torch.zeros(1, *input_shape), verbose=False
        )
        names = graph._module2name
        kinds = nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear
        layers = [m for m in model.modules() if isinstance(m, kinds)]
        roots = {}
        for layer in layers[:-1]:
            owners: dict[tuple[str, int], torch.Tensor] = {}
            pruner = graph.get_pruner_of_module(layer)
            for channel in range(layer.weight.shape[0]):
                group = graph.get_pruning_group(layer, pruner.prune_out_channels, [channel])
                for name, dim, indices in _coupled(graph, group):
                    shape = model.get_parameter(name).shape[dim]
                    owner = owners.setdefault((name, dim), torch.full((shape,), -1))
                    owner[indices] = channel
            roots[names[layer]] = [Coupling(n, d, o) for (n, d), o in owners.items()]
        return cls(model, input_shape, roots)


def _coupled(graph: tp.DependencyGraph, group) -> Iterator[tuple[str, int, list[int]]]:
    """(parameter name, dim, indices) of every parameter slice in a pruning group."""
    names = graph._module2name
    for dep, idxs in group:
        target = dep.target.module
        if not isinstance(target, nn.Conv2d | nn.Linear) or target not in names:
            continue
        indices = [int(i) for i in idxs]
        if graph.is_out_channel_pruning_fn(dep.handler):
            yield f"{names[target]}.weight", 0, indices
            if target.bias is not None:
                yield f"{names[target]}.bias", 0, indices
        else:
            yield f"{names[target]}.weight", 1, indices


def _channel_order(weights: Weights, mask: Mask, root: str) -> tuple[torch.Tensor, int]:
    """The root's output channels from weakest to strongest L2 norm (dead ones first), and
    how many are dead already (a dead channel stays dead)."""
    weight, keep = weights[f"{root}.weight"], mask[f"{root}.weight"]
    rows = (weight * keep).reshape(weight.shape[0], -1)
    alive = keep.reshape(weight.shape[0], -1).any(1)
    norms = torch.where(alive, torch.linalg.vector_norm(rows, dim=1), -1.0)
    return torch.argsort(norms, stable=True), int((~alive).sum())


def _apply(
    graph: ChannelGraph,
    mask: Mask,
    orders: dict[str, tuple[torch.Tensor, int]],
    *,
    keep_share: float,
) -> Mask:
    new = {name: keep.clone() for name, keep in mask.items()}
    for root, couplings in graph.roots.items():
        order, already = orders[root]
        kept = max(1, round(keep_share * len(order)))
        dead = order[: max(len(order) - kept, already)]
        for coupling in couplings:
            if coupling.name in new:
                removed = torch.nonzero(torch.isin(coupling.owner, dead)).flatten()
                new[coupling.name].index_fill_(coupling.dim, removed, False)
    return new


def _density(mask: Mask) -> float:
    return sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())


def structured_mask(graph: ChannelGraph, weights: Weights, mask: Mask, *, sparsity: float) -> Mask:
    """The channel mask whose parameter sparsity comes closest to `sparsity`: one channel
    share for all root layers, found by bisection (sparsity is monotone in it)."""
    if sparsity <= 1.0 - _density(mask):
        return mask
    orders = {root: _channel_order(weights, mask, root) for root in graph.roots}
    low, high = 0.0, 1.0
    for _ in range(16):
        middle = (low + high) / 2
        if 1.0 - _density(_apply(graph, mask, orders, keep_share=middle)) > sparsity:
            low = middle
        else:
            high = middle
    candidates = [_apply(graph, mask, orders, keep_share=share) for share in (low, high)]
    return min(candidates, key=lambda m: abs(1.0 - _density(m) - sparsity))


def kept_indices(keep: torch.Tensor) -> list[torch.Tensor]:
    """Per leading dim (0 and, for matrices and kernels, 1), the indices that survive."""
    dims = range(min(keep.dim(), 2))
    return [
        torch.nonzero(keep.transpose(0, d).reshape(keep.shape[d], -1).any(1)).flatten()
        for d in dims
    ]


def slice_weights(weights: Weights, mask: Mask) -> Weights:
    """The kept block of every masked tensor: the small model's weights."""
    small = {}
    for name, tensor in weights.items():
        if name not in mask:
            small[name] = tensor
            continue
        index = kept_indices(mask[name])
        block = tensor[index[0]]
        small[name] = block[:, index[1]] if len(index) > 1 else block
    return small


def expand_weights(small: Weights, mask: Mask, like: Weights) -> Weights:
    """The inverse of `slice_weights`: full-shape tensors, zero where the mask removed."""
    full = {}
    for name, template in like.items():
        if name not in mask:
            full[name] = small[name]
            continue
        index = kept_indices(mask[name])
        tensor = torch.zeros_like(template)
        if len(index) > 1:
            tensor[index[0][:, None], index[1][None, :]] = small[name]
        else:
            tensor[index[0]] = small[name]
        full[name] = tensor
    return full


def shrink(graph: ChannelGraph, weights: Weights, mask: Mask) -> nn.Module:
    """The physically pruned model (dead channels removed by torch-pruning), loaded with the
    kept weights."""
    model = copy.deepcopy(graph.model)
    dependency = tp.DependencyGraph().build_dependency(
        model, torch.zeros(1, *graph.input_shape), verbose=False
    )
    for root in graph.roots:
        module = model.get_submodule(root)
        keep = mask[f"{root}.weight"]
        dead = torch.nonzero(~keep.reshape(keep.shape[0], -1).any(1)).flatten().tolist()
        if dead:
            pruner = dependency.get_pruner_of_module(module)
            dependency.get_pruning_group(module, pruner.prune_out_channels, dead).prune()
    model.load_state_dict(slice_weights(weights, mask))
    return model


def macs(model: nn.Module, input_shape: tuple[int, ...], mask: Mask | None = None) -> float:
    """Multiply-accumulates of one forward pass of one sample (torch-pruning's counter); with
    `mask`, each layer's count scaled by its weight density: what sparse kernels would do."""
    total, _, per_layer, _ = tp.utils.count_ops_and_params(
        model, torch.zeros(1, *input_shape), layer_wise=True
    )
    if mask is None:
        return float(total)
    scaled = 0.0
    for name, module in model.named_modules():
        ops = per_layer.get(module) or 0.0
        if not list(module.children()):
            keep = mask.get(f"{name}.weight")
            scaled += ops * (float(keep.float().mean()) if keep is not None else 1.0)
    return scaled
