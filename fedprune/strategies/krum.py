"""Krum and Multi-Krum (Blanchard et al. 2017, NeurIPS, "Machine Learning with Adversaries"):
score each client by the summed squared distance to its n − f − 2 nearest others and keep the
best-scored model (Krum) or average the m best (Multi-Krum, sample-weighted and mask-aware).
An attacker far from the honest cluster scores badly however it scales its update; the paper
proves this for n > 2f + 2, which `check` requires.

Mask-aware: distances are between the models as uploaded (a pruned coordinate is 0), so
keeping almost nothing does not make an update look close to everyone. Krum's result is the
chosen client's model and mask; Multi-Krum averages each coordinate over the chosen clients
that kept it."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from fedprune.records import GlobalModel
from fedprune.strategies.base import STRATEGIES, Strategy, StrategyParams
from fedprune.strategies.buffers import DecodedUpdate
from fedprune.strategies.mask_aware import mask_aware_average
from fedprune.strategies.robust import (
    krum_order,
    malicious_count,
    require_clients,
    squared_distances,
)


class KrumParams(StrategyParams):
    malicious: int | None = Field(None, ge=0)
    """f, the malicious clients a round to tolerate; None: 20% of the round's clients."""


class MultiKrumParams(KrumParams):
    keep: int | None = Field(None, ge=1)
    """m, the best-scored models averaged; None: n − f."""


def check_krum(params: KrumParams, clients: int) -> int:
    """f for `clients` a round, after checking n > 2f + 2 (Blanchard et al.'s condition)."""
    f = malicious_count(clients, params.malicious)
    require_clients(params.method, f, clients, per_malicious=2)
    return f


def best_scored(
    updates: Sequence[DecodedUpdate], malicious: int | None, keep: int | None
) -> list[DecodedUpdate]:
    """The `keep` (None: n − f) best Krum-scored updates, in client order (the same sums in
    every engine)."""
    f = malicious_count(len(updates), malicious)
    order = krum_order(squared_distances(updates), f)
    return [updates[k] for k in sorted(order[: keep if keep is not None else len(updates) - f])]


@STRATEGIES.register("krum", KrumParams)
class Krum(Strategy):
    mask_aware = True
    params: KrumParams

    @classmethod
    def check(cls, params: StrategyParams, clients_per_round: int) -> None:
        assert isinstance(params, KrumParams)
        check_krum(params, clients_per_round)

    def aggregate(self, updates: Sequence[DecodedUpdate], previous: GlobalModel) -> GlobalModel:
        (best,) = best_scored(updates, self.params.malicious, keep=1)
        weights = {name: t.clone() for name, t in best.weights.items()}
        return GlobalModel(weights, {name: m.clone() for name, m in best.mask.items()})


@STRATEGIES.register("multikrum", MultiKrumParams)
class MultiKrum(Strategy):
    mask_aware = True
    params: MultiKrumParams

    @classmethod
    def check(cls, params: StrategyParams, clients_per_round: int) -> None:
        assert isinstance(params, MultiKrumParams)
        f = check_krum(params, clients_per_round)
        if params.keep is not None and params.keep > clients_per_round - f:
            raise ValueError(
                f"aggregation.keep: multikrum keeps at most n − f = {clients_per_round - f} "
                f"of {clients_per_round} clients a round, not {params.keep}"
            )

    def aggregate(self, updates: Sequence[DecodedUpdate], previous: GlobalModel) -> GlobalModel:
        chosen = best_scored(updates, self.params.malicious, self.params.keep)
        return GlobalModel(*mask_aware_average(chosen))
