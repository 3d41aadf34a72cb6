"""Structured (channel) pruning: whole output channels of conv layers and neurons of linear
layers, ranked by L2 norm (Li et al. 2017, arXiv 1608.08710), then physically removed.

During FL the model keeps its full shape and a mask that zeroes the removed channels and
everything coupled to them (the channel's bias, its BatchNorm's scale, shift and running
statistics, the next layer's input columns); which tensors are coupled comes from
torch-pruning's dependency graph (Fang et al. 2023, arXiv 2301.12900), not from hand-written
rules. `shrink` builds the physically smaller model from that mask; it computes the same
outputs as the masked full model with fewer FLOPs, and clients train it instead of the full
one.
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


LAYERS = nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear
NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")
"""A BatchNorm's per-channel tensors: a removed channel takes its scale, shift and running
statistics along (its `num_batches_tracked` counter is per layer, not per channel)."""


@dataclass
class ChannelGraph:
    """A model's prunable channels, one root layer per group of coupled channels (every
    conv/linear but the last, the classifier, whose outputs no earlier root's group holds:
    a residual stage is one root, a depthwise conv belongs to the layer feeding it), and, per
    root, the tensor slices torch-pruning couples to each of its channels, BatchNorm's
    parameters and running statistics among them."""

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
        shapes = {name: tensor.shape for name, tensor in model.state_dict().items()}
        layers = [m for m in model.modules() if isinstance(m, LAYERS)]
        roots: dict[str, list[Coupling]] = {}
        grouped: set[str] = set()
        for layer in layers[:-1]:
            if f"{names[layer]}.weight" in grouped:
                continue  # its channels are another root's: pruned with that root's group
            pruner = graph.get_pruner_of_module(layer)
            channels = list(range(layer.weight.shape[0]))
            group = graph.get_pruning_group(layer, pruner.prune_out_channels, channels)
            owners: dict[tuple[str, int], torch.Tensor] = {}
            for name, dim, indices, channel in _coupled(graph, group):
                owner = owners.setdefault((name, dim), torch.full((shapes[name][dim],), -1))
                owner[indices] = channel
            grouped |= {name for name, dim in owners if dim == 0}
            roots[names[layer]] = [Coupling(n, d, o) for (n, d), o in owners.items()]
        return cls(model, input_shape, roots)


def _coupled(
    graph: tp.DependencyGraph, group
) -> Iterator[tuple[str, int, torch.Tensor, torch.Tensor]]:
    """(tensor name, dim, indices, their root channels) of every slice in a pruning group."""
    names = graph._module2name
    for item in group.items:
        target = item.dep.target.module
        if target not in names:
            continue  # an operation (add, flatten, activation), not a layer
        indices, channels = torch.tensor(item.idxs), torch.tensor(item.root_idxs)
        prefix = names[target]
        if isinstance(target, nn.modules.batchnorm._BatchNorm):
            for tensor in NORM_TENSORS:
                if getattr(target, tensor, None) is not None:
                    yield f"{prefix}.{tensor}", 0, indices, channels
        elif not isinstance(target, LAYERS):
            continue
        elif graph.is_out_channel_pruning_fn(item.dep.handler):  # depthwise convs too
            yield f"{prefix}.weight", 0, indices, channels
            if target.bias is not None:
                yield f"{prefix}.bias", 0, indices, channels
        else:
            yield f"{prefix}.weight", 1, indices, channels


def _channel_order(
    weights: Weights, mask: Mask, root: str, couplings: list[Coupling]
) -> tuple[torch.Tensor, int]:
    """The root's output channels from weakest to strongest L2 norm over the output slices
    of every layer in its group (torch-pruning's group norm; the root's own norm when it
    stands alone), dead ones first, and how many are dead already (a dead one stays dead)."""
    keep = mask[f"{root}.weight"]
    alive = keep.reshape(keep.shape[0], -1).any(1)
    squares = torch.zeros(keep.shape[0], dtype=torch.float64)
    for coupling in couplings:
        tensor = weights[coupling.name]
        if coupling.dim != 0 or tensor.dim() < 2:
            continue  # layers' kernels and matrices only, not biases or norms
        kept = tensor * mask[coupling.name] if coupling.name in mask else tensor
        rows = kept.reshape(tensor.shape[0], -1).double().square().sum(1)
        owned = coupling.owner >= 0
        squares.index_add_(0, coupling.owner[owned], rows[owned])
    norms = torch.where(alive, squares.sqrt(), -1.0)
    return torch.argsort(norms, stable=True), int((~alive).sum())


def _apply(
    graph: ChannelGraph,
    mask: Mask,
    orders: dict[str, tuple[torch.Tensor, int]],
    *,
    keep_share: float,
) -> Mask:
    """`mask` with each root's weakest channels (all but `keep_share` of them) removed from
    every coupled slice: per tensor one broadcast AND per coupled dim (bisection calls this
    often; an index_fill per slice is several times slower on large models)."""
    alive: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for root, couplings in graph.roots.items():
        order, already = orders[root]
        kept = max(1, round(keep_share * len(order)))
        dead = order[: max(len(order) - kept, already)]
        for coupling in couplings:
            if coupling.name in mask:
                survives = ~torch.isin(coupling.owner, dead)
                alive.setdefault(coupling.name, []).append((coupling.dim, survives))
    new = {}
    for name, keep in mask.items():
        keep = keep if name in alive else keep.clone()
        for dim, survives in alive.get(name, []):
            shape = [1] * keep.dim()
            shape[dim] = -1
            keep = keep & survives.view(shape)
        new[name] = keep
    return new


def _density(mask: Mask) -> float:
    kept = sum(int(m.count_nonzero()) for m in mask.values())
    return kept / sum(m.numel() for m in mask.values())


def structured_mask(graph: ChannelGraph, weights: Weights, mask: Mask, *, sparsity: float) -> Mask:
    """The channel mask whose parameter sparsity comes closest to `sparsity`: one channel
    share for all root layers, found by bisection (sparsity is monotone in it)."""
    if sparsity <= 1.0 - _density(mask):
        return mask
    orders = {
        root: _channel_order(weights, mask, root, couplings)
        for root, couplings in graph.roots.items()
    }
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
    if keep.dim() == 1:
        return [torch.nonzero(keep).flatten()]
    dims = range(keep.dim())
    # a reduction over the other dims: no transposed copy of the whole mask
    return [torch.nonzero(keep.any(dim=tuple(o for o in dims if o != d))).flatten() for d in (0, 1)]


def slice_weights(weights: Weights, mask: Mask) -> Weights:
    """The kept block of every masked tensor: the small model's weights."""
    small = {}
    for name, tensor in weights.items():
        if name not in mask:
            small[name] = tensor
            continue
        index = kept_indices(mask[name])
        block = tensor.index_select(0, index[0])
        small[name] = block.index_select(1, index[1]) if len(index) > 1 else block
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


def lstm_macs(lstm: nn.LSTM, steps: int) -> int:
    """Multiply-accumulates of one sample through `steps` time steps of an LSTM: per step and
    layer 4·H·(in + H), its gates' two matrix products (bias adds and nonlinearities left out).
    Counted here because torch-pruning 1.6's counter takes an LSTM's batch and sequence
    length from the wrong dims (8× too many MACs for LEAF's Shakespeare model)."""
    hidden, total = lstm.hidden_size, 0
    for layer in range(lstm.num_layers):
        inputs = lstm.input_size if layer == 0 else hidden
        total += 4 * hidden * (inputs + hidden) * (2 if lstm.bidirectional else 1)
    return steps * total


def _lstm_steps(model: nn.Module, input_shape: tuple[int, ...]) -> dict[nn.Module, int]:
    """Each LSTM's sequence length for one sample of `input_shape` (one forward pass)."""
    steps: dict[nn.Module, int] = {}

    def record(module: nn.Module, args: tuple, _output: object) -> None:
        steps[module] = args[0].shape[1 if module.batch_first else 0]

    lstms = [m for m in model.modules() if isinstance(m, nn.LSTM)]
    hooks = [lstm.register_forward_hook(record) for lstm in lstms]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    return steps


def macs(model: nn.Module, input_shape: tuple[int, ...], mask: Mask | None = None) -> float:
    """Multiply-accumulates of one forward pass of one sample (torch-pruning's counter, LSTMs
    counted by `lstm_macs`); with `mask`, each layer's count scaled by its weights' density:
    what sparse kernels would do."""
    _, _, per_layer, _ = tp.utils.count_ops_and_params(
        model, torch.zeros(1, *input_shape), layer_wise=True
    )
    steps = _lstm_steps(model, input_shape)
    total = 0.0
    for name, module in model.named_modules():
        if list(module.children()):
            continue
        ops = lstm_macs(module, steps[module]) if module in steps else per_layer.get(module) or 0
        if mask is not None:
            prefix = f"{name}.weight"
            kept = [k for n, k in mask.items() if n == prefix or n.startswith(f"{prefix}_")]
            if kept:  # a layer's weight, or an LSTM's weight_ih_l0, weight_hh_l0, …
                ops *= sum(int(k.count_nonzero()) for k in kept) / sum(k.numel() for k in kept)
        total += ops
    return total
