"""Models, one file each, registered by name (`model.name`)."""

from __future__ import annotations

import torch
from torch import nn

from fedprune.registry import Params, import_entries
from fedprune.tasks.models.base import MODELS


def build_model(
    params: Params, input_shape: tuple[int, ...], num_classes: int, *, seed: int
) -> nn.Module:
    """The configured model; the same seed gives the same initial weights, on every engine."""
    torch.manual_seed(seed)
    return MODELS.get(params.name)(input_shape, num_classes, params)  # type: ignore[attr-defined]


__all__ = ["MODELS", "build_model"]

import_entries(__name__, __path__)  # every module here registers one entry
