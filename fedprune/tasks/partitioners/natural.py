"""Natural: one client per site of a data set kept at sites (`<path>/clients/<site>/`), in
the sites' name order; nothing is moved between sites."""

from __future__ import annotations

import numpy as np

from fedprune.registry import Params
from fedprune.tasks.partitioners.base import PARTITIONERS, Partition, PartitionError, Sites


@PARTITIONERS.register("natural")
def natural(
    labels: np.ndarray,
    num_clients: int,
    params: Params,
    *,
    rng: np.random.Generator,
    sites: Sites | None,
) -> Partition:
    if sites is None or not sites.names:
        raise PartitionError(
            "data.partition: natural needs a data set kept at sites (one folder per site, "
            "<path>/clients/<site>/train.*); this data set has none"
        )
    if len(sites.names) != num_clients:
        raise PartitionError(
            f"data.num_clients is {num_clients} but the data set has {len(sites.names)} sites "
            f"({', '.join(sites.names)}): set data.num_clients: {len(sites.names)}"
        )
    return list(sites.rows)
