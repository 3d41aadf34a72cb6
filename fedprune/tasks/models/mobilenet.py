"""MobileNetV2 (Sandler et al. 2018, arXiv 1801.04381), torchvision's implementation.

The first conv takes the data's channels; its stride is 1 for inputs of at most 64 px a side
(28×28, 32×32: five stride-2 stages still leave a 1×1 or 2×2 map for the classifier, where
torchvision's stride 2 would leave nothing to pool at 28 px) and 2, as published, above.
Everything else, the inverted residual blocks, ReLU6 and the 0.2 dropout, is torchvision's.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from torch import nn

from fedprune.registry import Params
from fedprune.tasks.models.base import MODELS
from fedprune.tasks.models.vision import class_getter, torchvision_models

SMALL_INPUT = 64
"""Largest side (px) that gets a stride-1 first conv."""


class MobileNetParams(Params):
    width_mult: Annotated[float, Field(gt=0, le=4)] = 1.0
    """Channel multiplier of every layer (the paper's width multiplier; 0.5, 0.75, 1.0, 1.4
    are the published ones)."""
    stem_stride: Literal[1, 2] | None = None
    """Stride of the first conv; unset: 1 for inputs of at most 64 px a side, else 2."""


@MODELS.register("mobilenet_v2", MobileNetParams)
def mobilenet_v2(
    input_shape: tuple[int, ...], num_classes: int, params: MobileNetParams
) -> nn.Module:
    channels, height, width = input_shape
    model = torchvision_models().mobilenet_v2(num_classes=num_classes, width_mult=params.width_mult)
    stride = params.stem_stride or (1 if max(height, width) <= SMALL_INPUT else 2)
    old = model.features[0][0]
    stem = nn.Conv2d(channels, old.out_channels, 3, stride=stride, padding=1, bias=False)
    nn.init.kaiming_normal_(stem.weight, mode="fan_out")  # torchvision's initialisation
    model.features[0][0] = stem
    model.__class__ = __getattr__("MobileNetV2")
    return model


__getattr__ = class_getter(__name__, "MobileNetV2", "MobileNetV2")
