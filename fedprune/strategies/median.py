"""Coordinate-wise median (Yin et al. 2018, arXiv 1803.01498): each coordinate is the median of
the clients' values, so fewer than half the clients, however far off, cannot move it past the
honest ones'. Unweighted, as in the paper and Flower's FedMedian: a client's claimed sample
count buys it no extra say.

Mask-aware: the median over the clients that kept the coordinate, whatever their number (one
client keeping it alone decides it); a coordinate no client kept stays pruned."""

from __future__ import annotations

from collections.abc import Sequence

from fedprune.records import GlobalModel
from fedprune.strategies.base import STRATEGIES, Strategy
from fedprune.strategies.buffers import DecodedUpdate
from fedprune.strategies.robust import median, per_coordinate


@STRATEGIES.register("median")
class Median(Strategy):
    mask_aware = True

    def aggregate(self, updates: Sequence[DecodedUpdate], previous: GlobalModel) -> GlobalModel:
        return GlobalModel(*per_coordinate(updates, median))
