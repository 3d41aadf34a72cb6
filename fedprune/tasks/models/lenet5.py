"""LeNet-5 (LeCun et al. 1998) with ReLU and max pooling, padded for 28×28 inputs."""

from __future__ import annotations

from torch import nn

from fedprune.registry import Params
from fedprune.tasks.models.base import MODELS, named


@MODELS.register("lenet5")
def lenet5(input_shape: tuple[int, ...], num_classes: int, params: Params) -> nn.Module:
    channels, height, width = input_shape
    return named(
        conv1=nn.Conv2d(channels, 6, 5, padding=2),
        relu1=nn.ReLU(),
        pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(6, 16, 5),
        relu2=nn.ReLU(),
        pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(),
        fc1=nn.Linear(16 * ((height // 2 - 4) // 2) * ((width // 2 - 4) // 2), 120),
        relu3=nn.ReLU(),
        fc2=nn.Linear(120, 84),
        relu4=nn.ReLU(),
        out=nn.Linear(84, num_classes),
    )
