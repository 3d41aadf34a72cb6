"""No client update trusted unchecked: every upload is screened before the strategy sees it.

An update is rejected, with its reason, when its payload is malformed or not the global
model's tensors (`PayloadError`: names, shapes, dtypes, lengths, bounded decompression), its
values or its training loss are not finite, its masks are not the global model's masked tensors, its sample count is
≤ 0 or above the rows that client holds, its payload is above `aggregation.max_upload_bytes`,
or (with `aggregation.outlier_norm`) its update norm is an outlier of the round. The rest go
on while at least `aggregation.min_clients` remain; otherwise the round fails (`RoundFailed`)
before anything is published, so the last good global model stays the published one."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedprune.config import ExperimentConfig
from fedprune.errors import UserError
from fedprune.io.codec import decode
from fedprune.io.payload_checks import PayloadError, expected_of
from fedprune.pruning.masks import Mask, Weights
from fedprune.records import ClientUpdate, GlobalModel
from fedprune.strategies import DecodedUpdate
from fedprune.strategies.robust import update_norms

HEADER_SLACK = 64 << 10
"""Bytes allowed above the dense size by default: the payload's header (a line per tensor)."""


@dataclass(frozen=True)
class Rejection:
    client: int
    reason: str


class RoundFailed(UserError):
    """Too few updates passed the checks, or the new global model is not finite: the round is
    not published and the run stops, its last good round intact (resume it once fixed)."""


def upload_limit(previous: GlobalModel, cfg: ExperimentConfig) -> int:
    if cfg.aggregation.max_upload_bytes is not None:
        return cfg.aggregation.max_upload_bytes
    dense = sum(t.numel() * t.element_size() for t in previous.weights.values())
    return math.ceil(1.25 * dense) + HEADER_SLACK


def problem(
    update: ClientUpdate, previous: GlobalModel, limit: int, held: int | None
) -> tuple[str | None, tuple[Weights, Mask] | None]:
    """Why `update` cannot be aggregated (None if it can), and its decoded model."""
    if update.num_samples <= 0:
        return f"num_samples {update.num_samples} ≤ 0", None
    if held is not None and update.num_samples > held:
        return f"num_samples {update.num_samples} above the {held} rows it holds", None
    if not math.isfinite(update.train_loss):
        return f"training diverged (loss {update.train_loss}): lower client.lr", None
    if len(update.payload) > limit:
        return f"payload of {len(update.payload)} bytes above the bound of {limit}", None
    try:
        weights, mask = decode(update.payload, expected=expected_of(previous.weights))
    except PayloadError as error:
        return f"malformed payload: {error}", None
    if set(mask) != set(previous.mask):
        return (
            f"masks for {sorted(set(mask) ^ set(previous.mask))[:5]} differ from the model's",
            None,
        )
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"non-finite values in {name!r}", None
    return None, (weights, mask)


def screen(
    updates: Sequence[ClientUpdate],
    previous: GlobalModel,
    cfg: ExperimentConfig,
    held_rows: Sequence[int] | None,
) -> list[Rejection]:
    """The round's rejected updates, in client order; raises RoundFailed when fewer than
    `aggregation.min_clients` pass (a round that sampled no client, with Poisson sampling,
    has nothing to check)."""
    limit = upload_limit(previous, cfg)
    rejected: list[Rejection] = []
    to_measure: dict[int, DecodedUpdate] = {}  # decoded, when norms are checked
    for update in sorted(updates, key=lambda u: u.client):
        held = held_rows[update.client] if held_rows is not None else None
        reason, decoded = problem(update, previous, limit, held)
        if reason is not None:
            rejected.append(Rejection(update.client, reason))
        elif cfg.aggregation.outlier_norm is not None:
            assert decoded is not None
            to_measure[update.client] = DecodedUpdate(*decoded, update.num_samples)
    if to_measure:
        measured = update_norms(list(to_measure.values()), previous).tolist()
        norms = dict(zip(to_measure, measured, strict=True))
        ordered = sorted(norms.values())
        median = ordered[(len(ordered) - 1) // 2]
        bound = cfg.aggregation.outlier_norm * median
        for client, norm in norms.items():
            if norm > bound:
                reason = f"update norm {norm:.4g} above {cfg.aggregation.outlier_norm} × median"
                rejected.append(Rejection(client, reason))
        rejected.sort(key=lambda r: r.client)
    passed = len(updates) - len(rejected)
    if updates and passed < cfg.aggregation.min_clients:  # none sampled (Poisson): no check
        reasons = "; ".join(f"client {r.client}: {r.reason}" for r in rejected[:5])
        raise RoundFailed(
            f"only {passed} of {len(updates)} updates passed the checks, "
            f"aggregation.min_clients is {cfg.aggregation.min_clients} ({reasons})"
        )
    return rejected


def accepted(updates: Sequence[ClientUpdate], rejected: Sequence[Rejection]) -> list[ClientUpdate]:
    out = {r.client for r in rejected}
    return [u for u in updates if u.client not in out]


def check_finite(model: GlobalModel) -> None:
    """A new global model that is not finite is never published."""
    for name, tensor in model.weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise RoundFailed(f"the aggregate's {name!r} is not finite: the round is not published")
