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


def round_costs(
    privacy: PrivacyConfig,
    *,
    sample_rate: float,
    shard_rows: list[int],
    batch_size: int,
    epochs: int,
) -> list[Composition]:
    """What one round costs each client: central, one step at the client sampling rate;
    local, DP-SGD's steps on each shard size (Poisson batches of expected size `batch_size`,
    sample rate batch / rows, `epochs` passes of ⌈rows / batch⌉ steps)."""
    sigma = privacy.noise_multiplier
    if privacy.mechanism == "central":
        return [Composition(sigma, sample_rate, 1)]
    return [
        Composition(sigma, min(1.0, batch_size / rows), epochs * math.ceil(rows / batch_size))
        for rows in sorted(set(shard_rows))
    ]
