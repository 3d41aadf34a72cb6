"""What a round sums securely, and the average the strategy gets from the sums.

Each client's vector holds its sample-weighted values c·w (zero where it pruned), its
sample-weighted kept-mask c·m for the masked tensors, and its count c. Their sums give the
FedAvg average Σc·w / Σc and the mask-aware one, Σc·w / Σc·m per coordinate, exactly (up to
the fixed-point resolution), while the server never sees one client's values or mask. Under
central DP each client sends its clipped change instead, and the server noises the sum."""

from __future__ import annotations

import math
from collections.abc import Sequence, Set
from dataclasses import dataclass

import numpy as np
import torch

from fedprune.privacy.central import change, clip_
from fedprune.privacy.secure.fixed_point import DEFAULT_BOUND
from fedprune.privacy.secure.simulate import SecureSumResult, secure_sum
from fedprune.pruning.masks import Weights
from fedprune.records import GlobalModel
from fedprune.strategies.buffers import DecodedUpdate, unflatten


@dataclass(frozen=True)
class SecureRound:
    """What the protocol cost a round, over every client."""

    bytes_up: int
    """Bytes the clients sent (keys, encrypted shares, masked vectors, unmasking shares):
    what they upload instead of their payloads."""
    bytes_down: int
    """Bytes the server sent the clients besides the broadcast (key lists, shares)."""
    seconds: float
    """The server's time in the protocol."""
    survivors: int


def secure_average(
    updates: Sequence[DecodedUpdate],
    previous: GlobalModel,
    *,
    mask_aware: bool,
    threshold: float,
    round_: int,
    dropped: Set[int] = frozenset(),
) -> tuple[DecodedUpdate, SecureRound]:
    """The round's average (mask-aware or FedAvg's) from secure sums over `updates`; the
    clients at the indices in `dropped` drop out after sharing their keys."""
    names = list(previous.weights)
    masked = [n for n in names if n in previous.mask]
    vectors = {}
    for index, update in enumerate(updates):
        count = float(update.num_samples)
        parts = [count * update.weights[n].double().flatten() for n in names]
        parts += [count * update.mask[n].double().flatten() for n in masked]
        vectors[index] = torch.cat([*parts, torch.tensor([count], dtype=torch.float64)]).numpy()
    result = run_protocol(
        vectors, threshold=threshold, round_=round_, dropped=dropped, bound=DEFAULT_BOUND
    )
    total = torch.from_numpy(result.total)
    values = unflatten(total, names, previous.weights)
    width = sum(previous.weights[n].numel() for n in names)
    shares = unflatten(total[width:], masked, previous.weights)
    count = float(total[-1])
    weights, mask = {}, {}
    for name in names:
        like = previous.weights[name]
        if mask_aware and name in previous.mask:
            kept = shares[name] > 0.5  # a sum of counts ≥ 1 where any client kept it
            average = torch.where(kept, values[name] / shares[name].clamp_min(1e-30), 0.0)
        else:
            average = values[name] / count
        if like.is_floating_point():
            weights[name] = average.to(like.dtype)
        else:  # counters (BatchNorm's batches seen): the nearest integer
            weights[name] = average.round().to(like.dtype)
        if name in previous.mask:
            mask[name] = kept if mask_aware else weights[name] != 0
    return DecodedUpdate(weights, mask, round(count)), cost(result)


def secure_clipped_sum(
    updates: Sequence[DecodedUpdate],
    previous: GlobalModel,
    *,
    clip: float,
    threshold: float,
    round_: int,
    dropped: Set[int] = frozenset(),
) -> tuple[Weights, SecureRound]:
    """Σ of the clients' changes clipped to `clip`, summed securely (each client clips its
    own: the server cannot see one to clip it). Central DP's noise is added to it after."""
    floating = [n for n, t in previous.weights.items() if t.is_floating_point()]
    vectors = {}
    for index, update in enumerate(updates):
        delta = change(update.weights, previous.weights, update.mask)
        clip_(delta, clip)
        vectors[index] = torch.cat([delta[n].double().flatten() for n in floating]).numpy()
    result = run_protocol(vectors, threshold=threshold, round_=round_, dropped=dropped, bound=clip)
    summed = unflatten(torch.from_numpy(result.total), floating, previous.weights)
    like = previous.weights
    return {n: t.to(like[n].dtype) for n, t in summed.items()}, cost(result)


def run_protocol(
    vectors: dict[int, np.ndarray],
    *,
    threshold: float,
    round_: int,
    dropped: Set[int],
    bound: float,
) -> SecureSumResult:
    """The protocol over `vectors` with the Shamir threshold ⌈threshold·n⌉ (at least 2) and
    the agreed bound on every coordinate (a client above it is refused, by name)."""
    clients = len(vectors)
    if clients < 2:
        raise ValueError(
            f"secure aggregation needs at least 2 clients a round, this one has {clients}: "
            "one client's sum is its update"
        )
    return secure_sum(
        vectors,
        threshold=max(2, math.ceil(threshold * clients)),
        dropped_after_sharing=dropped,
        round_=round_,
        bound=bound,
    )


def cost(result: SecureSumResult) -> SecureRound:
    return SecureRound(
        bytes_up=sum(sum(steps.values()) for steps in result.bytes_sent.values()),
        bytes_down=sum(sum(steps.values()) for steps in result.bytes_received.values()),
        seconds=result.server_seconds,
        survivors=len(result.survivors),
    )
