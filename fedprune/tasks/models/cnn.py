"""The FedAvg paper's CNN: conv5×5 32 → pool → conv5×5 64 → pool → fc 512 → fc classes."""

from __future__ import annotations

from torch import nn

from fedprune.registry import Params
from fedprune.tasks.models.base import MODELS, named


@MODELS.register("cnn")
def cnn(input_shape: tuple[int, ...], num_classes: int, params: Params) -> nn.Module:
    channels, height, width = input_shape
    return named(
        conv1=nn.Conv2d(channels, 32, 5, padding=2),
        relu1=nn.ReLU(),
        pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(32, 64, 5, padding=2),
        relu2=nn.ReLU(),
        pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(),
        fc1=nn.Linear(64 * (height // 4) * (width // 4), 512),
        relu3=nn.ReLU(),
        out=nn.Linear(512, num_classes),
    )
