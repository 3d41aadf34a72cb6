"""A user's own model package: fedprune imports it by path (`model.name:
hospital_models:tabular_mlp`) and calls it with the data's input shape and class count."""

from __future__ import annotations

import math

from torch import nn


def tabular_mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 64) -> nn.Module:
    """Two hidden layers for standardised tabular features."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )
