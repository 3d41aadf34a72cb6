"""The model registry: a model is a function of the input shape, the class count and its
settings that returns an `nn.Module`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fedprune.registry import Params, Registry

ModelFactory = Callable[[tuple[int, ...], int, Params], nn.Module]
"""factory(input_shape, num_classes, params) -> a fresh model."""

MODELS: Registry[ModelFactory] = Registry("model", tag="name", default="mlp")
