"""The FedAvg paper's CNN: conv5×5 32 → pool → conv5×5 64 → pool → fc 512 → fc classes."""

from __future__ import annotations

from torch import nn

from fedprune.registry import Params
from fedprune.tasks.models.base import MODELS


@MODELS.register("cnn")
def cnn(input_shape: tuple[int, ...], num_classes: int, params: Params) -> nn.Module:
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (height // 4) * (width // 4), 512),
        nn.ReLU(),
        nn.Linear(512, num_classes),
    )
