"""The model registry: a model is a function of the input shape, the class count and its
settings that returns an `nn.Module`. A user's own model is named by import path instead:
`model: {name: package.module:callable, kwargs: {...}}`, called as
`callable(input_shape=..., num_classes=..., **kwargs)`."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pydantic import Field
from torch import nn

from fedprune.registry import ImportPath, Params, Registry

ModelFactory = Callable[[tuple[int, ...], int, Params], nn.Module]
"""factory(input_shape, num_classes, params) -> a fresh model."""


class ImportedModel(Params):
    """A model of the user's: `name` is `package.module:callable`, `kwargs` its own
    arguments beside `input_shape` and `num_classes` (for regression: the target count)."""

    name: ImportPath
    kwargs: dict[str, Any] = Field(default_factory=dict)


MODELS: Registry[ModelFactory] = Registry(
    "model", tag="name", default="mlp", imported=ImportedModel
)


def named(**layers: nn.Module) -> nn.Sequential:
    """A Sequential whose layers have names (`fc1.weight`, not `1.weight`): they name the
    per-layer metrics in MLflow (`layer_sparsity.fc1.weight`) and the tensors of the files."""
    return nn.Sequential(OrderedDict(layers))
