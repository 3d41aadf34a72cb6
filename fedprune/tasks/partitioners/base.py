"""The partitioner registry: a partitioner splits a labelled training set over the clients,
disjoint, covering and seeded (the same split on every engine and in every pod)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from pydantic import Field

from fedprune.errors import UserError
from fedprune.registry import Registry

Partition = list[np.ndarray]
"""One sorted array of sample indices per client."""

Partitioner = Callable[..., Partition]
"""partitioner(labels, num_clients, params, *, rng[, sites]) -> one index array per client
(a partitioner that declares `sites` gets the data set's own, or None)."""


@dataclass(frozen=True)
class Sites:
    """Where a data set kept at sites has its rows: site k, named `names[k]`, holds the rows
    `rows[k]` of the train split."""

    names: tuple[str, ...]
    rows: tuple[np.ndarray, ...]


MinSamples = Annotated[int, Field(ge=1)]


class PartitionError(UserError):
    """A partition the data cannot satisfy."""


PARTITIONERS: Registry[Partitioner] = Registry("partition", tag="kind", default="iid")
