"""Models chosen by name in the config."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fedprune.config import ModelConfig


def mlp(in_shape: tuple[int, ...], num_classes: int, cfg: ModelConfig) -> nn.Module:
    """The FedAvg paper's "2NN": two hidden ReLU layers (McMahan et al. 2017)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(int(torch.tensor(in_shape).prod()), cfg.hidden),
        nn.ReLU(),
        nn.Linear(cfg.hidden, cfg.hidden),
        nn.ReLU(),
        nn.Linear(cfg.hidden, num_classes),
    )


def lenet5(in_shape: tuple[int, ...], num_classes: int, cfg: ModelConfig) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) with ReLU and max pooling, padded for 28×28 inputs."""
    return nn.Sequential(
        nn.Conv2d(in_shape[0], 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * ((in_shape[1] // 2 - 4) // 2) * ((in_shape[2] // 2 - 4) // 2), 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


def cnn(in_shape: tuple[int, ...], num_classes: int, cfg: ModelConfig) -> nn.Module:
    """The FedAvg paper's CNN: conv5×5 32 → pool → conv5×5 64 → pool → fc 512 → fc classes."""
    return nn.Sequential(
        nn.Conv2d(in_shape[0], 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (in_shape[1] // 4) * (in_shape[2] // 4), 512),
        nn.ReLU(),
        nn.Linear(512, num_classes),
    )


MODELS: dict[str, Callable[[tuple[int, ...], int, ModelConfig], nn.Module]] = {
    "mlp": mlp,
    "lenet5": lenet5,
    "cnn": cnn,
}


def build_model(cfg: ModelConfig, in_shape: tuple[int, ...], num_classes: int, seed: int):
    """The same seed gives the same initial weights, on every engine."""
    torch.manual_seed(seed)
    return MODELS[cfg.name](in_shape, num_classes, cfg)
