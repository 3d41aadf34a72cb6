"""LeNet-5 (LeCun et al. 1998) with ReLU and max pooling, padded for 28×28 inputs."""

from __future__ import annotations

from torch import nn

from fedprune.registry import Params
from fedprune.tasks.models.base import MODELS


@MODELS.register("lenet5")
def lenet5(input_shape: tuple[int, ...], num_classes: int, params: Params) -> nn.Module:
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * ((height // 2 - 4) // 2) * ((width // 2 - 4) // 2), 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )
