"""Pathological shards (McMahan et al. 2017, arXiv 1602.05629): sort by label, cut into
`num_clients * shards_per_client` shards, deal them out (≈ that many classes per client)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from fedprune.registry import Params
from fedprune.tasks.partitioners.base import PARTITIONERS, MinSamples, Partition, PartitionError


class ShardsParams(Params):
    shards_per_client: Annotated[int, Field(ge=1)] = 2
    min_samples: MinSamples = 1


@PARTITIONERS.register("shards", ShardsParams)
def shards(
    labels: np.ndarray, num_clients: int, params: ShardsParams, *, rng: np.random.Generator
) -> Partition:
    count = num_clients * params.shards_per_client
    if count > len(labels):  # before allocating `count` shards, some of them empty
        raise PartitionError(
            f"data.partition.shards_per_client: {num_clients} clients × "
            f"{params.shards_per_client} shards is more shards than the {len(labels)} "
            "samples; lower shards_per_client or data.num_clients"
        )
    order = np.argsort(labels, kind="stable")
    pieces = np.array_split(order, count)
    dealt = rng.permutation(len(pieces)).reshape(num_clients, params.shards_per_client)
    return [np.concatenate([pieces[i] for i in row]) for row in dealt]
