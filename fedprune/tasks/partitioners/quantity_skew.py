"""Quantity skew: client sizes drawn from a Dirichlet over clients, labels IID."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from fedprune.registry import Params
from fedprune.tasks.partitioners.base import PARTITIONERS, MinSamples, Partition, PartitionError


class QuantitySkewParams(Params):
    alpha: Annotated[float, Field(gt=0.0)] = 0.5
    """Concentration of the sizes: small α, very unequal clients."""
    min_samples: MinSamples = 10


@PARTITIONERS.register("quantity_skew", QuantitySkewParams)
def quantity_skew(
    labels: np.ndarray, num_clients: int, params: QuantitySkewParams, *, rng: np.random.Generator
) -> Partition:
    spare = len(labels) - params.min_samples * num_clients
    if spare < 0:
        raise PartitionError(
            f"quantity_skew: {len(labels)} samples cannot give {num_clients} clients "
            f"{params.min_samples} each"
        )
    shares = rng.dirichlet(np.full(num_clients, params.alpha))
    sizes = params.min_samples + rng.multinomial(spare, shares)
    return np.split(rng.permutation(len(labels)), np.cumsum(sizes)[:-1])
