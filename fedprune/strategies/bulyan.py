"""Bulyan (El Mhamdi et al. 2018, ICML, arXiv 1802.07927): pick θ = n − 2f models by Krum,
one at a time (each pick scored among the models not yet picked), then per coordinate take
the median of the picked values and average the β = θ − 2f values nearest it. Krum alone lets
an attacker move single coordinates far while staying close overall; Bulyan bounds every
coordinate. Needs n ≥ 4f + 3, which `check` requires.

Mask-aware: per coordinate, θ and β count the picked clients that kept it: the median of
those, then the mean of the max(1, kept − 2f) nearest it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field

from fedprune.records import GlobalModel
from fedprune.strategies.base import STRATEGIES, Strategy, StrategyParams
from fedprune.strategies.buffers import DecodedUpdate
from fedprune.strategies.robust import (
    closest_mean,
    krum_order,
    median,
    per_coordinate,
    require_clients,
    squared_distances,
)


class BulyanParams(StrategyParams):
    malicious: int | None = Field(None, ge=0)
    """f, the malicious clients a round to tolerate; None: the most Bulyan can, ⌊(n − 3)/4⌋
    (20% of 20 clients, 24% of 100; below 7 clients a round, none)."""


def bulyan_f(params: BulyanParams, clients: int) -> int:
    if params.malicious is not None:
        return params.malicious
    return max(0, (clients - 3) // 4)


@STRATEGIES.register("bulyan", BulyanParams)
class Bulyan(Strategy):
    mask_aware = True
    params: BulyanParams

    @classmethod
    def check(cls, params: StrategyParams, clients_per_round: int) -> None:
        assert isinstance(params, BulyanParams)
        f = bulyan_f(params, clients_per_round)
        require_clients("bulyan", f, clients_per_round, per_malicious=4)

    def aggregate(self, updates: Sequence[DecodedUpdate], previous: GlobalModel) -> GlobalModel:
        f = bulyan_f(self.params, len(updates))
        distances = squared_distances(updates)
        left = list(range(len(updates)))
        picked: list[int] = []
        while len(picked) < len(updates) - 2 * f:
            among = torch.tensor(left, device=distances.device)
            best = left[krum_order(distances[among][:, among], f)[0]]
            picked.append(best)
            left.remove(best)
        chosen = [updates[k] for k in sorted(picked)]

        def trimmed_around_median(values: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
            center = median(values, kept)
            count = (kept.sum(0) - 2 * f).clamp_min(1)
            return closest_mean(values, kept, center, count)

        return GlobalModel(*per_coordinate(chosen, trimmed_around_median))
