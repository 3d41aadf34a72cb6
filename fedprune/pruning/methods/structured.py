"""Structured pruning: whole channels and neurons, by L2 norm, to the target share of
parameters; clients train the physically smaller model (see fedprune.pruning.channels)."""

from __future__ import annotations

from torch import nn

from fedprune.io.codec import mask_id
from fedprune.pruning.channels import ChannelGraph, shrink, slice_weights, structured_mask
from fedprune.pruning.masks import Mask, Weights
from fedprune.pruning.methods.base import (
    METHODS,
    Method,
    MethodContext,
    Model,
    Needs,
    PruningParams,
    RoundInputs,
    pruned,
)


class Shrunk:
    """The physically pruned model for one mask, built once per mask and reused."""

    def __init__(self, graph: ChannelGraph):
        self.graph = graph
        self.built: tuple[str, nn.Module] | None = None

    def __call__(self, weights: Weights, mask: Mask) -> nn.Module:
        key = mask_id(mask)
        if self.built is None or self.built[0] != key:
            self.built = (key, shrink(self.graph, weights, mask))
        return self.built[1]


@METHODS.register("structured")
class Structured(Method):
    trains_shrunk = True
    prunes_biases = True

    def __init__(self, params: PruningParams, ctx: MethodContext):
        super().__init__(params, ctx)
        self.graph = ChannelGraph.of(ctx.model, ctx.input_shape)
        self.learner = Shrunk(self.graph)
        """The smaller model clients train in."""
        self._serving = Shrunk(self.graph)

    @classmethod
    def needs(cls, params: PruningParams) -> Needs:
        return Needs(vectorizable=False)

    def skipped(self, mask: Mask) -> list[str]:
        """Weight tensors no prunable channel reaches: channels are removed only at the
        outputs of conv and linear layers (not the last) and where torch-pruning couples them."""
        coupled = {c.name for couplings in self.graph.roots.values() for c in couplings}
        weights = self.ctx.model.state_dict()
        return [
            n
            for n, t in weights.items()
            if t.is_floating_point() and t.dim() > 1 and n not in coupled
        ]

    def served(self, weights: Weights, mask: Mask) -> nn.Module:
        model = self._serving(weights, mask)
        model.load_state_dict(slice_weights(weights, mask))
        return model

    def server(self, weights: Weights, mask: Mask, *, round_: int, inputs: RoundInputs) -> Model:
        target = self.target(round_)
        if target == 0:
            return weights, mask
        return pruned(weights, structured_mask(self.graph, weights, mask, sparsity=target))
