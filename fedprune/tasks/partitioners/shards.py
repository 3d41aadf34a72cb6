"""Pathological shards (McMahan et al. 2017, arXiv 1602.05629): sort by label, cut into
`num_clients * shards_per_client` shards, deal them out (≈ that many classes per client)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from fedprune.registry import Params
from fedprune.tasks.partitioners.base import PARTITIONERS, Partition


class ShardsParams(Params):
    shards_per_client: Annotated[int, Field(ge=1)] = 2


@PARTITIONERS.register("shards", ShardsParams)
def shards(
    labels: np.ndarray, num_clients: int, params: ShardsParams, *, rng: np.random.Generator
) -> Partition:
    order = np.argsort(labels, kind="stable")
    pieces = np.array_split(order, num_clients * params.shards_per_client)
    dealt = rng.permutation(len(pieces)).reshape(num_clients, params.shards_per_client)
    return [np.concatenate([pieces[i] for i in row]) for row in dealt]
