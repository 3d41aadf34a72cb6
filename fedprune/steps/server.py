"""A round's server side: the strategy combines the decoded uploads, then the pruning
method chooses the next global mask."""

from __future__ import annotations

from fedprune.config import ExperimentConfig
from fedprune.io.codec import decode
from fedprune.io.payload_checks import PayloadError, expected_of
from fedprune.io.tensors import st_load as load_tensors
from fedprune.pruning.masks import Weights
from fedprune.pruning.methods import Method, RoundInputs
from fedprune.records import ClientUpdate, GlobalModel
from fedprune.steps.screening import check_finite
from fedprune.strategies import STRATEGIES, DecodedUpdate


def aggregate(
    updates: list[ClientUpdate],
    cfg: ExperimentConfig,
    previous: GlobalModel,
    device: str = "cpu",
) -> GlobalModel:
    """Combine the screened client models, in client order (every engine sums in one order),
    on `device` (a GPU when the aggregation pod has one), given `previous`, the global model
    the clients started from, with the strategy's state; the result comes back on the CPU."""
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
    combined = strategy.aggregate(decoded, start)
    check_finite(combined)  # a non-finite global model is never published
    return GlobalModel(
        on(combined.weights, "cpu"), on(combined.mask, "cpu"), on(combined.state, "cpu")
    )


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
