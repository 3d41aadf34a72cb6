"""What the robust rules share: the round's updates read tensor by tensor as (K, n) matrices
with the clients' masks, in blocks of columns (a block's sort or distances stay in memory),
computed in float64 and written back in the model's dtype; and Krum's pairwise distances.

Mask-aware throughout: a coordinate is combined over the clients that kept it (its `kept`
column); a coordinate no client kept stays pruned (0, mask False). Unmasked tensors (biases,
norms) count every client as keeping every coordinate."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from fedprune.pruning.masks import Mask, Weights
from fedprune.records import GlobalModel
from fedprune.strategies.buffers import DecodedUpdate

BLOCK_VALUES = 1 << 22
"""Numbers per block (K × columns): a block's float64 copy and its sort stay ~32 MB."""

Columns = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""rule(values (K, B) float64, kept (K, B) bool) -> (B,) combined values."""


def tensors(updates: Sequence[DecodedUpdate]) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, values (K, n), kept (K, n)) per tensor, in the model's order."""
    for name in updates[0].weights:
        values = torch.stack([u.weights[name].reshape(-1) for u in updates])
        if name in updates[0].mask:
            kept = torch.stack([u.mask[name].reshape(-1) for u in updates])
        else:
            kept = torch.ones_like(values, dtype=torch.bool)
        yield name, values, kept


def blocks(values: torch.Tensor) -> Iterator[slice]:
    width = max(1, BLOCK_VALUES // max(1, values.shape[0]))
    for start in range(0, values.shape[1], width):
        yield slice(start, start + width)


def per_coordinate(updates: Sequence[DecodedUpdate], rule: Columns) -> tuple[Weights, Mask]:
    """Apply `rule` to every coordinate over the clients that kept it."""
    weights: Weights = {}
    mask: Mask = {}
    for name, values, kept in tensors(updates):
        like = updates[0].weights[name]
        out = torch.zeros(values.shape[1], dtype=torch.float64, device=values.device)
        for cols in blocks(values):
            out[cols] = rule(values[:, cols].double(), kept[:, cols])
        any_kept = kept.any(0)
        weights[name] = torch.where(any_kept, out, 0.0).to(like.dtype).view(like.shape)
        if name in updates[0].mask:
            mask[name] = any_kept.view(like.shape)
    return weights, mask


def sorted_kept(values: torch.Tensor, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each column's kept values in ascending order, then +inf for the clients that pruned
    it; and the count kept per column."""
    ordered = torch.where(kept, values, torch.inf).sort(dim=0).values
    return ordered, kept.sum(0)


def median(values: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median over the kept values (an even count: the mean of the middle two,
    as numpy's)."""
    ordered, count = sorted_kept(values, kept)
    low = ((count - 1) // 2).clamp_min(0)
    high = (count // 2).clamp(max=len(values) - 1)
    middle = (ordered.gather(0, low[None]) + ordered.gather(0, high[None])) / 2
    return torch.where(count > 0, middle[0], 0.0)


def closest_mean(
    values: torch.Tensor, kept: torch.Tensor, center: torch.Tensor, count: torch.Tensor
) -> torch.Tensor:
    """Per column, the mean of the `count` kept values nearest `center` (Bulyan's last step)."""
    distance = torch.where(kept, (values - center).abs(), torch.inf)
    nearest = distance.argsort(dim=0, stable=True)
    ranks = torch.arange(len(values), device=values.device)[:, None]
    chosen = ranks < count
    picked = values.gather(0, nearest)
    total = torch.where(chosen, picked, 0.0).sum(0)
    return total / count.clamp_min(1)


def squared_distances(updates: Sequence[DecodedUpdate]) -> torch.Tensor:
    """(K, K) squared L2 distances between the clients' models as uploaded, a pruned
    coordinate counting as 0 (float64 Gram matrices, one block at a time). Over the models,
    not over the coordinates both kept: an update that keeps almost nothing is then far from
    the others, not close to all of them."""
    k = len(updates)
    device = next(iter(updates[0].weights.values())).device
    distances = torch.zeros(k, k, dtype=torch.float64, device=device)
    for _, values, kept in tensors(updates):
        for cols in blocks(values):
            x = torch.where(kept[:, cols], values[:, cols].double(), 0.0)
            squares = x.square().sum(1)
            distances += squares[:, None] + squares[None, :] - 2 * (x @ x.T)
    return distances.clamp_min(0.0)


def krum_scores(distances: torch.Tensor, malicious: int) -> torch.Tensor:
    """Each client's score: the sum of its squared distances to its n - f - 2 nearest others
    (at least one; Blanchard et al. 2017)."""
    n = len(distances)
    closest = max(1, n - malicious - 2)
    itself = torch.eye(n, dtype=torch.bool, device=distances.device)
    others = distances.masked_fill(itself, torch.inf)
    return others.sort(dim=1).values[:, :closest].sum(1)


def krum_order(distances: torch.Tensor, malicious: int) -> list[int]:
    """Clients by Krum score, best first (ties: the lower index, as Flower's argmin)."""
    return krum_scores(distances, malicious).sort(stable=True).indices.tolist()


def malicious_count(clients: int, malicious: int | None) -> int:
    """f: as configured, or 20% of the round's clients, rounded down."""
    return malicious if malicious is not None else int(0.2 * clients)


def require_clients(rule: str, f: int, clients: int, per_malicious: int) -> None:
    """Refuse a round of `clients` when `rule` tolerating f needs per_malicious·f + 3 of them
    (Krum 2f + 3, Bulyan 4f + 3)."""
    needed = per_malicious * f + 3
    if clients < needed:
        raise ValueError(
            f"aggregation.malicious: {rule} tolerating f = {f} needs at least {per_malicious}f "
            f"+ 3 = {needed} clients a round, the round has {clients} (lower "
            "aggregation.malicious or sample more clients)"
        )


def update_norms(updates: Sequence[DecodedUpdate], previous: GlobalModel) -> torch.Tensor:
    """(K,) L2 norms of the clients' updates (model − `previous`) over the floating tensors
    and the coordinates each kept, in float64 (norm clipping, the screening's outliers)."""
    device = next(iter(updates[0].weights.values())).device
    squares = torch.zeros(len(updates), dtype=torch.float64, device=device)
    for name, values, kept in tensors(updates):
        if not values.is_floating_point():
            continue
        start = previous.weights[name].reshape(-1).to(values.device).double()
        for cols in blocks(values):
            delta = torch.where(kept[:, cols], values[:, cols].double() - start[cols], 0.0)
            squares += delta.square().sum(1)
    return squares.sqrt()
