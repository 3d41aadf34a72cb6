"""FedAvg (McMahan et al. 2017, arXiv 1602.05629): the sample-weighted average of the client
models. A coordinate pruned by some clients is averaged with their zeros, so it shrinks; the
mask that results keeps every coordinate left non-zero."""

from __future__ import annotations

from collections.abc import Sequence

from fedprune.records import GlobalModel
from fedprune.strategies.base import STRATEGIES, Strategy
from fedprune.strategies.buffers import DecodedUpdate, sample_weights, weighted_average


@STRATEGIES.register("fedavg")
class FedAvg(Strategy):
    from_average = True

    def aggregate(self, updates: Sequence[DecodedUpdate], previous: GlobalModel) -> GlobalModel:
        weights = weighted_average(updates, list(updates[0].weights), sample_weights(updates))
        return GlobalModel(weights, {name: weights[name] != 0 for name in updates[0].mask})
