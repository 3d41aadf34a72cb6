"""A round's server side: the strategy combines the decoded uploads, then the pruning
method chooses the next global mask."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedprune.config import ExperimentConfig
from fedprune.io.codec import decode
from fedprune.io.payload_checks import PayloadError, expected_of
from fedprune.io.tensors import st_load as load_tensors
from fedprune.privacy.central import (
    CLIP,
    changes_noise,
    clipped_sum,
    next_clip,
    noised_model,
    secret_generator,
)
from fedprune.privacy.config import count_noise_of
from fedprune.privacy.secure.aggregate import SecureRound, secure_average, secure_clipped_sum
from fedprune.pruning.masks import Weights
from fedprune.pruning.methods import Method, RoundInputs
from fedprune.records import ClientUpdate, GlobalModel
from fedprune.steps.screening import RoundFailed, check_finite
from fedprune.strategies import STRATEGIES, DecodedUpdate


@dataclass(frozen=True)
class Aggregate:
    model: GlobalModel
    secure: SecureRound | None = None
    """What secure aggregation's protocol cost the round, when it ran."""


def aggregate(
    updates: list[ClientUpdate],
    cfg: ExperimentConfig,
    previous: GlobalModel,
    device: str = "cpu",
    *,
    round_: int = 0,
) -> Aggregate:
    """Combine the screened client models, in client order (every engine sums in one order),
    on `device` (a GPU when the aggregation pod has one), given `previous`, the global model
    the clients started from, with the strategy's state; the result comes back on the CPU.
    With privacy settings the strategy gets one average instead (`combine_privately`)."""
    decoded = []
    expected = expected_of(previous.weights)
    for update in sorted(updates, key=lambda u: u.client):
        try:
            weights, mask = decode(update.payload, expected=expected)
        except PayloadError as error:  # unscreened updates (the screening names them too)
            raise PayloadError(f"client {update.client}: {error}") from None
        decoded.append(DecodedUpdate(on(weights, device), on(mask, device), update.num_samples))
    start = GlobalModel(
        on(previous.weights, device), on(previous.mask, device), on(previous.state, device)
    )
    strategy = STRATEGIES.get(cfg.aggregation.method)(cfg.aggregation)
    decoded, secure, private_state = combine_privately(decoded, start, cfg, round_=round_)
    if not decoded:  # a Poisson draw of no client: nothing to combine
        return Aggregate(previous)
    combined = strategy.aggregate(decoded, start)
    check_finite(combined)  # a non-finite global model is never published
    state = on(combined.state, "cpu") | on(private_state, "cpu")
    model = GlobalModel(on(combined.weights, "cpu"), on(combined.mask, "cpu"), state)
    return Aggregate(model, secure)


def combine_privately(
    decoded: list[DecodedUpdate], start: GlobalModel, cfg: ExperimentConfig, *, round_: int
) -> tuple[list[DecodedUpdate], SecureRound | None, Weights]:
    """What the strategy combines: the clients' models as they are; with central DP the one
    noised average of their clipped changes; with secure aggregation the average from the
    secure sums (of the clipped changes, under central DP), so the server never sees one.
    Also the server state privacy adds to the new model (adaptive clipping's clip)."""
    privacy = cfg.privacy
    if not privacy.secure_aggregation and privacy.mechanism != "central":
        return decoded, None, {}
    if privacy.secure_aggregation and len(decoded) == 1:
        raise RoundFailed(
            "secure aggregation: this round has 1 client, and one client's sum is its update; "
            "the round is not published (raise sampling.fraction so rounds draw at least 2)"
        )
    if privacy.mechanism != "central":
        if not decoded:
            return decoded, None, {}
        mask_aware = STRATEGIES.get(cfg.aggregation.method).mask_aware
        average, secure = secure_average(
            decoded, start, mask_aware=mask_aware, threshold=privacy.threshold, round_=round_
        )
        return [average], secure, {}
    noised, secure, state = dp_fedavg_round(decoded, start, cfg, round_=round_)
    return [noised], secure, state


def dp_fedavg_round(
    decoded: list[DecodedUpdate], start: GlobalModel, cfg: ExperimentConfig, *, round_: int
) -> tuple[DecodedUpdate, SecureRound | None, Weights]:
    """Central DP's round: the clipped changes summed (securely, with secure aggregation),
    noised, over q·N; with `clip_quantile` the clip adapts from a noised count of the
    clients within it, and the noise on the changes gives the count its share of σ."""
    privacy, expected = cfg.privacy, cfg.expected_clients_per_round()
    clip = float(start.state[CLIP]) if CLIP in start.state else privacy.clip
    secure = None
    if privacy.secure_aggregation and decoded:
        total, secure = secure_clipped_sum(
            decoded, start, clip=clip, threshold=privacy.threshold, round_=round_
        )
    else:
        total, within = clipped_sum(decoded, start, clip)
    sigma, state, generator = privacy.noise_multiplier, {}, secret_generator()
    if privacy.clip_quantile is not None:  # refused with secure aggregation: `within` is known
        count_noise = count_noise_of(privacy, expected)
        sigma = changes_noise(sigma, count_noise)
        adapted = next_clip(
            clip, within, expected_clients=expected, quantile=privacy.clip_quantile,
            lr=privacy.clip_lr, count_noise=count_noise, generator=generator,
        )  # fmt: skip
        state[CLIP] = torch.tensor(adapted, dtype=torch.float64)
    noised = noised_model(
        total,
        start,
        clip=clip,
        noise_multiplier=sigma,
        expected_clients=expected,
        generator=generator,
        samples=sum(u.num_samples for u in decoded),
    )
    return noised, secure, state


def on(tensors: Weights, device: str) -> Weights:
    return {name: t.to(device) for name, t in tensors.items()}


def mean_importance(updates: list[ClientUpdate]) -> Weights | None:
    """The sample-weighted mean of the clients' importance, or None if none was sent."""
    sent = [u for u in sorted(updates, key=lambda u: u.client) if u.importance]
    if not sent:
        return None
    total = sum(u.num_samples for u in sent)
    mean: Weights = {}
    for update in sent:
        for name, value in load_tensors(update.importance).items():
            share = value.float() * (update.num_samples / total)
            mean[name] = mean[name] + share if name in mean else share
    return mean


def server_prune(
    global_model: GlobalModel,
    updates: list[ClientUpdate],
    method: Method,
    *,
    round_: int,
    broadcast: bytes,
) -> GlobalModel:
    """The method's next global mask (and weights) from the aggregate and the round's
    `broadcast`: magnitude pruning to the schedule's target, a structured mask,
    FedDST's consensus, PruneFL's importance ranking, the lottery ticket's rewind, or the
    union of LotteryFL's personal masks."""
    inputs = RoundInputs(broadcast, mean_importance(updates))
    weights, mask = method.server(
        global_model.weights, global_model.mask, round_=round_, inputs=inputs
    )
    return GlobalModel(weights=weights, mask=mask, state=global_model.state)
