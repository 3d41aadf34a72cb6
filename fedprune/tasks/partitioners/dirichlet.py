"""Dirichlet label skew (Hsu et al. 2019, arXiv 1909.06335): each class is split across
clients by proportions ~ Dir(α); redrawn until every client has `min_samples` (bounded, so
impossible settings fail instead of looping)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from fedprune.registry import Params
from fedprune.tasks.partitioners.base import PARTITIONERS, MinSamples, Partition, PartitionError

MAX_DRAWS = 1000


class DirichletParams(Params):
    alpha: Annotated[float, Field(gt=0.0)] = 0.5
    """Concentration: small α, few classes per client."""
    min_samples: MinSamples = 10
    """Every client gets at least this many samples."""


@PARTITIONERS.register("dirichlet", DirichletParams)
def dirichlet(
    labels: np.ndarray, num_clients: int, params: DirichletParams, *, rng: np.random.Generator
) -> Partition:
    classes = np.unique(labels)
    for _ in range(MAX_DRAWS):
        shards: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for cls in classes:
            members = rng.permutation(np.flatnonzero(labels == cls))
            proportions = rng.dirichlet(np.full(num_clients, params.alpha))
            cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(int)
            for client, part in enumerate(np.split(members, cuts)):
                shards[client].append(part)
        clients = [np.concatenate(parts) for parts in shards]
        if min(len(c) for c in clients) >= params.min_samples:
            return clients
    raise PartitionError(
        f"dirichlet: no draw in {MAX_DRAWS} gave every one of {num_clients} clients "
        f"{params.min_samples} samples; raise data.partition.alpha or lower "
        "data.partition.min_samples or data.num_clients"
    )
