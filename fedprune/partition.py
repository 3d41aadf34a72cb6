"""Seeded client partitions of a labelled data set: disjoint, covering, reproducible.

Dirichlet label skew follows Hsu et al. 2019 (arXiv 1909.06335); shards follow McMahan et al.
2017 (arXiv 1602.05629); quantity skew draws client sizes from a Dirichlet over clients.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedprune.config import PartitionConfig
from fedprune.errors import UserError

Partition = list[np.ndarray]
"""One sorted array of sample indices per client."""

MAX_DRAWS = 1000


class PartitionError(UserError):
    """A partition the data cannot satisfy."""


def iid(labels: np.ndarray, num_clients: int, cfg: PartitionConfig, rng) -> Partition:
    return list(np.array_split(rng.permutation(len(labels)), num_clients))


def dirichlet(labels: np.ndarray, num_clients: int, cfg: PartitionConfig, rng) -> Partition:
    """Each class is split across clients by proportions ~ Dir(α); redrawn until every client
    has `min_samples` (bounded, so impossible settings fail instead of looping)."""
    classes = np.unique(labels)
    for _ in range(MAX_DRAWS):
        shards: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for cls in classes:
            members = rng.permutation(np.flatnonzero(labels == cls))
            proportions = rng.dirichlet(np.full(num_clients, cfg.alpha))
            cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(int)
            for client, part in enumerate(np.split(members, cuts)):
                shards[client].append(part)
        clients = [np.concatenate(parts) for parts in shards]
        if min(len(c) for c in clients) >= cfg.min_samples:
            return clients
    raise PartitionError(
        f"dirichlet: no draw in {MAX_DRAWS} gave every one of {num_clients} clients "
        f"{cfg.min_samples} samples; raise data.partition.alpha or lower "
        "data.partition.min_samples or data.num_clients"
    )


def shards(labels: np.ndarray, num_clients: int, cfg: PartitionConfig, rng) -> Partition:
    """Sort by label, cut into `num_clients * shards_per_client` shards, deal them out."""
    order = np.argsort(labels, kind="stable")
    pieces = np.array_split(order, num_clients * cfg.shards_per_client)
    dealt = rng.permutation(len(pieces)).reshape(num_clients, cfg.shards_per_client)
    return [np.concatenate([pieces[i] for i in row]) for row in dealt]


def quantity_skew(labels: np.ndarray, num_clients: int, cfg: PartitionConfig, rng) -> Partition:
    spare = len(labels) - cfg.min_samples * num_clients
    if spare < 0:
        raise PartitionError(
            f"quantity_skew: {len(labels)} samples cannot give {num_clients} clients "
            f"{cfg.min_samples} each"
        )
    sizes = cfg.min_samples + rng.multinomial(spare, rng.dirichlet(np.full(num_clients, cfg.alpha)))
    return np.split(rng.permutation(len(labels)), np.cumsum(sizes)[:-1])


PARTITIONERS: dict[str, Callable[..., Partition]] = {
    "iid": iid,
    "dirichlet": dirichlet,
    "shards": shards,
    "quantity_skew": quantity_skew,
}


def partition(labels: np.ndarray, num_clients: int, cfg: PartitionConfig, seed: int) -> Partition:
    if num_clients > len(labels):
        raise PartitionError(f"{num_clients} clients but only {len(labels)} samples")
    rng = np.random.default_rng(seed)
    clients = PARTITIONERS[cfg.kind](np.asarray(labels), num_clients, cfg, rng)
    return [np.sort(c) for c in clients]
