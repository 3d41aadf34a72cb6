"""IID: a seeded shuffle cut into equal parts."""

from __future__ import annotations

import numpy as np

from fedprune.registry import Params
from fedprune.tasks.partitioners.base import PARTITIONERS, MinSamples, Partition


class IidParams(Params):
    min_samples: MinSamples = 1


@PARTITIONERS.register("iid", IidParams)
def iid(
    labels: np.ndarray, num_clients: int, params: IidParams, *, rng: np.random.Generator
) -> Partition:
    return list(np.array_split(rng.permutation(len(labels)), num_clients))
