"""Coordinate-wise trimmed mean (Yin et al. 2018, arXiv 1803.01498): per coordinate, drop the
⌊β·n⌋ largest and ⌊β·n⌋ smallest values and average the rest, unweighted (Flower's
FedTrimmedAvg cuts the same way). Tolerates up to ⌊β·n⌋ malicious clients a round.

Mask-aware: n is the number of clients that kept the coordinate, so where few kept it the cut
is smaller (below 1/β clients, none: the plain mean of those that kept it)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field

from fedprune.records import GlobalModel
from fedprune.strategies.base import STRATEGIES, Strategy, StrategyParams
from fedprune.strategies.buffers import DecodedUpdate
from fedprune.strategies.robust import per_coordinate, sorted_kept


class TrimmedMeanParams(StrategyParams):
    beta: float = Field(0.2, ge=0.0, lt=0.5)
    """The fraction cut from each end of every coordinate's values (0.2: tolerates 20%)."""


@STRATEGIES.register("trimmed_mean", TrimmedMeanParams)
class TrimmedMean(Strategy):
    mask_aware = True
    params: TrimmedMeanParams

    def aggregate(self, updates: Sequence[DecodedUpdate], previous: GlobalModel) -> GlobalModel:
        beta = self.params.beta

        def trimmed(values: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
            ordered, count = sorted_kept(values, kept)
            cut = (beta * count.double()).floor().long()
            ranks = torch.arange(len(values), device=values.device)[:, None]
            inside = (ranks >= cut) & (ranks < count - cut)
            total = torch.where(inside, ordered, 0.0).sum(0)
            return total / (count - 2 * cut).clamp_min(1)

        return GlobalModel(*per_coordinate(updates, trimmed))
