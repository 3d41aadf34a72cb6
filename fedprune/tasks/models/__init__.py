"""Models, one file each, registered by name (`model.name`), or the user's by import path."""

from __future__ import annotations

import torch
from torch import nn

from fedprune.errors import UserError
from fedprune.registry import Params, call_imported, import_entries, is_import_path
from fedprune.tasks.models.base import MODELS, ImportedModel


class ModelError(UserError):
    """A model that cannot be built as configured."""


def build_model(
    params: Params, input_shape: tuple[int, ...], num_classes: int, *, seed: int
) -> nn.Module:
    """The configured model; the same seed gives the same initial weights, on every engine."""
    torch.manual_seed(seed)
    name: str = params.name  # type: ignore[attr-defined]
    if not is_import_path(name):
        return MODELS.get(name)(input_shape, num_classes, params)
    assert isinstance(params, ImportedModel)
    arguments = {"input_shape": input_shape, "num_classes": num_classes, **params.kwargs}
    return call_imported(name, "model.name", nn.Module, "a torch.nn.Module", **arguments)


__all__ = ["MODELS", "ImportedModel", "ModelError", "build_model"]

import_entries(__name__, __path__)  # every module here registers one entry
