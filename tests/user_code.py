"""A user's own code, named by import path in the tests' configs (models, a data loader)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fedprune.tasks.datasets import DataShape, FederatedData


def linear(input_shape: tuple[int, ...], num_classes: int, bias: bool = True) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes, bias=bias))


def wrong_signature(shape, classes) -> nn.Module:  # not (input_shape=, num_classes=)
    return nn.Linear(1, 1)


def not_a_module(input_shape: tuple[int, ...], num_classes: int) -> str:
    return "a string"


def ten_outputs(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 10))


def blobs(samples: int = 400, seed: int = 0) -> FederatedData:
    """Two Gaussian blobs in 4 dimensions, split 3:1 into train and test."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, samples)
    x = rng.normal(size=(samples, 4)) + 2.0 * y[:, None]
    cut = samples * 3 // 4
    tensors = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    return FederatedData(
        name="blobs",
        x_train=tensors[0][:cut],
        y_train=tensors[1][:cut],
        x_test=tensors[0][cut:],
        y_test=tensors[1][cut:],
        shape=DataShape((4,), 2),
    )


class Recurrent(nn.Module):
    """Features read as a sequence by an LSTM, then a linear classifier."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.lstm = nn.LSTM(1, 8, batch_first=True)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(x.reshape(len(x), -1, 1))
        return self.head(hidden[-1])


def recurrent(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return Recurrent(num_classes)
