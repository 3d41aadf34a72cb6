"""Feature standardisation with federated statistics: each client sends its row count and,
per feature, the sum and the sum of squares of its own rows (no row leaves a client); the
server combines them into the mean and standard deviation of the union, which every client,
the test set and the served model then apply. Equal to central standardisation of the union
within float rounding (sums in float64)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedprune.tasks.datasets import FederatedData
from fedprune.tasks.partitioners import Partition


@dataclass(frozen=True)
class Moments:
    """One client's contribution: what it sends instead of rows."""

    count: int
    total: torch.Tensor
    squares: torch.Tensor


@dataclass(frozen=True)
class Standardization:
    mean: torch.Tensor
    std: torch.Tensor
    """Population standard deviation; 1 for a constant feature (it is only centred)."""

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.double() - self.mean) / self.std).float()

    def to_json(self) -> bytes:
        return json.dumps({"mean": self.mean.tolist(), "std": self.std.tolist()}).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Standardization:
        held = json.loads(raw)
        return cls(
            torch.tensor(held["mean"], dtype=torch.float64),
            torch.tensor(held["std"], dtype=torch.float64),
        )


class Standardized(nn.Module):
    """A served model that takes raw features: standardises them as training did, then runs
    `model`."""

    def __init__(self, model: nn.Module, stats: Standardization):
        super().__init__()
        self.model = model
        self.register_buffer("mean", stats.mean.float())
        self.register_buffer("std", stats.std.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = (x.flatten(1) - self.mean) / self.std  # (not len(x): ONNX keeps any batch)
        return self.model(flat.reshape(x.shape))


def client_moments(x: torch.Tensor) -> Moments:
    flat = x.reshape(len(x), -1).double().contiguous()  # one summation order for any layout
    return Moments(len(x), flat.sum(0), flat.square().sum(0))


def combine(moments: list[Moments]) -> Standardization:
    """The server's side: the union's mean and standard deviation from the clients' sums."""
    count = sum(m.count for m in moments)
    mean = sum(m.total for m in moments) / count
    variance = (sum(m.squares for m in moments) / count - mean.square()).clamp_min(0.0)
    std = variance.sqrt()
    return Standardization(mean, torch.where(std > 1e-12, std, torch.ones_like(std)))


def standardize(data: FederatedData, shards: Partition) -> tuple[FederatedData, Standardization]:
    """`data` with every split standardised by the statistics its clients (`shards`) sent."""
    moments = [client_moments(data.x_train[torch.from_numpy(np.asarray(rows))]) for rows in shards]
    stats = combine(moments)
    return standardized(data, stats), stats


def standardized(data: FederatedData, stats: Standardization) -> FederatedData:
    """`data` with every split standardised by `stats` (a site's pod: the server combined
    them from every site's moments)."""

    def scale(x: torch.Tensor) -> torch.Tensor:
        return stats.apply(x.flatten(1)).reshape(x.shape)  # (flatten: a split may be empty)

    sites = {site: (scale(x), y) for site, (x, y) in data.site_tests.items()}
    scaled = {"x_train": scale(data.x_train), "x_test": scale(data.x_test), "site_tests": sites}
    return dataclasses.replace(data, standardize=False, **scaled)
