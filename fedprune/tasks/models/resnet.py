"""ResNet-18 (He et al. 2016, arXiv 1512.03385), torchvision's implementation.

By default it takes the usual CIFAR adaptation (as in the CIFAR experiments of He et al. and
most FL papers since): a 3×3 stride-1 first conv on the data's channels and no max-pool, so a
28×28 or 32×32 image keeps its resolution into the first stage instead of shrinking 4× before
any residual block sees it. `stem: imagenet` keeps torchvision's 7×7 stride-2 conv and max-pool
(on the data's channels): the published architecture, for large images.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from fedprune.registry import Params
from fedprune.tasks.models.base import MODELS
from fedprune.tasks.models.vision import class_getter, torchvision_models


class ResNetParams(Params):
    stem: Literal["cifar", "imagenet"] = "cifar"
    """`cifar`: 3×3 stride-1 first conv, no max-pool (small images); `imagenet`: torchvision's
    7×7 stride-2 conv and 3×3 max-pool."""


@MODELS.register("resnet18", ResNetParams)
def resnet18(input_shape: tuple[int, ...], num_classes: int, params: ResNetParams) -> nn.Module:
    model = torchvision_models().resnet18(num_classes=num_classes)
    if params.stem == "cifar":
        model.conv1 = nn.Conv2d(input_shape[0], 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    else:
        model.conv1 = nn.Conv2d(input_shape[0], 64, 7, stride=2, padding=3, bias=False)
    # torchvision's initialisation of every conv, for the replaced one too
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.__class__ = __getattr__("ResNet18")
    return model


__getattr__ = class_getter(__name__, "ResNet18", "ResNet")
