"""Partitioners, one file each, registered by `data.partition.kind`."""

from __future__ import annotations

import numpy as np

from fedprune.registry import Params, import_entries
from fedprune.tasks.partitioners.base import PARTITIONERS, Partition, PartitionError


def partition(labels: np.ndarray, num_clients: int, params: Params, *, seed: int) -> Partition:
    """The configured split of `labels` over `num_clients`, each client's indices sorted."""
    if num_clients > len(labels):
        raise PartitionError(f"{num_clients} clients but only {len(labels)} samples")
    rng = np.random.default_rng(seed)
    split = PARTITIONERS.get(params.kind)  # type: ignore[attr-defined]
    return [np.sort(c) for c in split(np.asarray(labels), num_clients, params, rng=rng)]


__all__ = ["PARTITIONERS", "Partition", "PartitionError", "partition"]

import_entries(__name__, __path__)  # every module here registers one entry
