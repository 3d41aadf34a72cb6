"""Partitioners, one file each, registered by `data.partition.kind`."""

from __future__ import annotations

import inspect

import numpy as np

from fedprune.registry import Params, import_entries
from fedprune.tasks.partitioners.base import PARTITIONERS, Partition, PartitionError, Sites


def partition(
    labels: np.ndarray,
    num_clients: int,
    params: Params,
    *,
    seed: int,
    sites: Sites | None = None,
) -> Partition:
    """The configured split of `labels` over `num_clients`, each client's indices sorted;
    `sites`: where a data set kept at sites has its rows (the natural partition's input)."""
    if num_clients > len(labels):
        raise PartitionError(f"{num_clients} clients but only {len(labels)} samples")
    rng = np.random.default_rng(seed)
    split = PARTITIONERS.get(params.kind)  # type: ignore[attr-defined]
    extra = {"sites": sites} if "sites" in inspect.signature(split).parameters else {}
    clients = [np.sort(c) for c in split(np.asarray(labels), num_clients, params, rng=rng, **extra)]
    minimum = getattr(params, "min_samples", 1)
    short = [k for k, rows in enumerate(clients) if len(rows) < minimum]
    if short:
        raise PartitionError(
            f"data.partition ({params.kind}) gives {len(short)} of {num_clients} clients "  # type: ignore[attr-defined]
            f"fewer than {minimum} samples (client {short[0]}: {len(clients[short[0]])}); "
            "lower data.num_clients or change the partition's settings"
        )
    return clients


__all__ = ["PARTITIONERS", "Partition", "PartitionError", "Sites", "partition"]

import_entries(__name__, __path__)  # every module here registers one entry
