"""Client-level DP-FedAvg (McMahan et al. 2018, arXiv 1710.06963, "Learning Differentially
Private Recurrent Language Models").

Each client's model change, its trained model minus the global model it started from, is
clipped to L2 norm `clip` (by the client, and again by the server, which does not trust the
client's clipping). The server sums the clipped changes, adds Gaussian noise of standard
deviation `noise_multiplier`·`clip` to every coordinate the global mask keeps, and divides by
the expected number of clients a round, q·N (the fixed denominator of McMahan's f̃, so one
client's presence moves the sum by at most `clip`). Every client weighs the same: weighting
by sample counts would let one client's count scale its influence.

Pruning stays post-processing: noise lands only on the coordinates the previous global mask
keeps (the mask is public, chosen from earlier noised models), a client's change counts only
where it kept the weight, and the pruning method chooses the next mask from the noised model
alone. Integer tensors (BatchNorm's batch counters) keep the previous model's values."""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence

import torch

from fedprune.pruning.masks import Mask, Weights
from fedprune.records import GlobalModel
from fedprune.strategies.buffers import DecodedUpdate


def secret_generator() -> torch.Generator:
    """A generator seeded from the OS's randomness, never from the config's seed: noise that
    anyone holding the config could regenerate would protect nothing (so a DP run is not
    bit-for-bit reproducible)."""
    return torch.Generator().manual_seed(secrets.randbits(63))


def change(local: Weights, start: Weights, mask: Mask) -> Weights:
    """The floating tensors' change from `start`, zero where `mask` prunes (a client's
    change counts only where it kept the weight)."""
    moved = {}
    for name, value in local.items():
        if not value.is_floating_point():
            continue
        delta = value - start[name].to(value.device, value.dtype)
        keep = mask.get(name)
        moved[name] = delta if keep is None else torch.where(keep, delta, 0.0)
    return moved


def clip_(delta: Weights, clip: float) -> float:
    """Scale `delta` in place to L2 norm ≤ `clip`; returns the norm before clipping."""
    norms = [torch.linalg.vector_norm(t.double()) for t in delta.values()]
    norm = float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
    scale = min(1.0, clip / max(norm, 1e-30))
    if scale < 1.0:
        for tensor in delta.values():
            tensor.mul_(scale)
    return norm


def clipped_model(local: Weights, start: Weights, mask: Mask, clip: float) -> Weights:
    """What a DP-FedAvg client uploads: `start` plus its change clipped to `clip` (pruned
    coordinates stay zero; integer tensors as trained)."""
    delta = change(local, start, mask)
    clip_(delta, clip)
    out = dict(local)
    for name, moved in delta.items():
        keep = mask.get(name)
        value = start[name].to(moved.device, moved.dtype) + moved
        out[name] = value if keep is None else torch.where(keep, value, 0.0)
    return out


def clipped_sum(
    updates: Sequence[DecodedUpdate], previous: GlobalModel, clip: float
) -> tuple[Weights, int]:
    """Σ of the clients' changes from `previous`, each clipped to `clip` (by the server: it
    does not trust a client's own clipping), and how many were within `clip` already."""
    total: Weights = {
        n: torch.zeros_like(t) for n, t in previous.weights.items() if t.is_floating_point()
    }
    within = 0
    for update in updates:
        delta = change(update.weights, previous.weights, update.mask)
        within += clip_(delta, clip) <= clip
        for name, moved in delta.items():
            total[name].add_(moved)
    return total, within


CLIP = "privacy.clip"
"""Server state (published with each round's model): adaptive clipping's current clip."""


def changes_noise(noise_multiplier: float, count_noise: float) -> float:
    """σ_Δ on the changes when the within-clip count takes its share of the budget: the two
    Gaussian queries together are as private as one of noise multiplier σ (Andrew et al.
    2021, Theorem 1): σ_Δ = (σ⁻² − (2·count_noise)⁻²)^-½."""
    return (noise_multiplier**-2 - (2 * count_noise) ** -2) ** -0.5


def next_clip(
    clip: float,
    within: int,
    *,
    expected_clients: float,
    quantile: float,
    lr: float,
    count_noise: float,
    generator: torch.Generator,
) -> float:
    """Geometric update towards the `quantile` of the change norms, from the noised share of
    clients within the clip: clip · exp(−lr · (b̃ − quantile))."""
    noise = float(torch.randn((), generator=generator, dtype=torch.float64)) * count_noise
    share = (within + noise) / expected_clients
    return clip * math.exp(-lr * (share - quantile))


def noised_model(
    total: Weights,
    previous: GlobalModel,
    *,
    clip: float,
    noise_multiplier: float,
    expected_clients: float,
    generator: torch.Generator,
    samples: int = 1,
) -> DecodedUpdate:
    """`previous` + (`total` + N(0, (σ·clip)²)) / q·N on the coordinates `previous.mask`
    keeps: the round's DP-FedAvg model, as one update for the strategy."""
    std = noise_multiplier * clip
    weights = dict(previous.weights)
    for name, summed in total.items():
        noise = torch.randn(summed.shape, generator=generator, dtype=torch.float64) * std
        moved = (summed + noise.to(summed.device, summed.dtype)) / expected_clients
        value = previous.weights[name] + moved
        keep = previous.mask.get(name)
        weights[name] = value if keep is None else torch.where(keep, value, 0.0)
    return DecodedUpdate(weights, dict(previous.mask), max(samples, 1))
