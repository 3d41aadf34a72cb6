"""Privacy accounting through Opacus's accountants (never hand-written): ε at δ after a run's
rounds, the rounds a target ε allows, and the noise multiplier that meets a target.

Both mechanisms are compositions of the sampled Gaussian mechanism, so one accountant
history, (noise multiplier, sample rate, steps), describes each:
- central: one step a round, sample rate q (each client joins a round with probability q,
  Poisson sampling, as the analysis assumes);
- local: a client's DP-SGD steps, sample rate batch size / its rows, each round it trains.
  ε is that of the worst-off client had it trained in every round: an upper bound that
  claims no amplification from client sampling."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from fedprune.privacy.config import PrivacyConfig

ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [80, 128, 256, 512]
"""Rényi orders the RDP accountant searches (Opacus's defaults, extended upwards so small ε
at large noise is not cut off at order 63)."""


@dataclass(frozen=True)
class Composition:
    """A round's privacy cost: `steps` sampled Gaussian steps at `sample_rate`."""

    noise_multiplier: float
    sample_rate: float
    steps: int


@lru_cache(maxsize=4096)
def epsilon(step: Composition, rounds: int, *, delta: float, accountant: str = "rdp") -> float:
    """ε at `delta` after `rounds` rounds of `step`."""
    if rounds == 0:
        return 0.0
    from opacus.accountants import create_accountant  # 1.5 s to import: only runs with DP pay it

    counter = create_accountant(accountant)
    counter.history = [(step.noise_multiplier, step.sample_rate, step.steps * rounds)]
    extra = {"alphas": ALPHAS} if accountant == "rdp" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "optimal order is the largest alpha"
        return float(counter.get_epsilon(delta=delta, **extra))


def worst_epsilon(
    steps: list[Composition], rounds: int, *, delta: float, accountant: str = "rdp"
) -> float:
    """The largest ε over the clients' compositions (local DP: one per shard size)."""
    return max(epsilon(s, rounds, delta=delta, accountant=accountant) for s in set(steps))


def rounds_within(
    steps: list[Composition], target: float, *, rounds: int, delta: float, accountant: str
) -> int:
    """The most rounds (≤ `rounds`) whose ε stays within `target` (0: not even one)."""
    low, high = 0, rounds  # ε grows with rounds: bisect for the last round within target
    while low < high:
        middle = (low + high + 1) // 2
        if worst_epsilon(steps, middle, delta=delta, accountant=accountant) <= target:
            low = middle
        else:
            high = middle - 1
    return low


def calibrate(
    costs: list[Composition], target_epsilon: float, *, rounds: int, delta: float, accountant: str
) -> float:
    """The smallest noise multiplier whose ε after `rounds` rounds of every composition in
    `costs` is within `target_epsilon` (Opacus's search, to 1% of ε, for each; the largest)."""
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return max(
            float(
                get_noise_multiplier(
                    target_epsilon=target_epsilon,
                    target_delta=delta,
                    sample_rate=cost.sample_rate,
                    steps=cost.steps * rounds,
                    accountant=accountant,
                )
            )
            for cost in {(c.sample_rate, c.steps): c for c in costs}.values()
        )


def round_costs(cfg, held_rows: Sequence[int] = ()) -> list[Composition]:
    """What one round of experiment `cfg` costs each client: central, one step at the client
    sampling rate; local, DP-SGD's steps on each shard size in `held_rows` (Poisson batches of
    expected size `client.batch_size`, sample rate batch / rows, `client.epochs` passes of
    ⌈rows / batch⌉ steps)."""
    sigma, batch, epochs = cfg.privacy.noise_multiplier, cfg.client.batch_size, cfg.client.epochs
    if cfg.privacy.mechanism == "central":
        return [Composition(sigma, cfg.sampling.fraction or 1.0, 1)]
    return [
        Composition(sigma, min(1.0, batch / rows), epochs * math.ceil(rows / batch))
        for rows in sorted({n for n in held_rows if n > 0})
    ]


def allowed_rounds(privacy: PrivacyConfig, costs: list[Composition], *, rounds: int) -> int:
    """Of `rounds`, those `privacy.target_epsilon` allows (all of them without one)."""
    if privacy.target_epsilon is None:
        return rounds
    return rounds_within(
        costs, privacy.target_epsilon, rounds=rounds, delta=privacy.delta,
        accountant=privacy.accountant,
    )  # fmt: skip


def unreachable(privacy: PrivacyConfig, costs: list[Composition]) -> str | None:
    """Why `privacy.target_epsilon` cannot be met even for one round (None if it can)."""
    if allowed_rounds(privacy, costs, rounds=1):
        return None
    first = worst_epsilon(costs, 1, delta=privacy.delta, accountant=privacy.accountant)
    return (
        f"privacy.target_epsilon {privacy.target_epsilon} cannot be met: one round already "
        f"spends ε = {first:.3g} at δ = {privacy.delta}; raise privacy.noise_multiplier "
        "(`fedprune privacy calibrate` tells by how much)"
    )
