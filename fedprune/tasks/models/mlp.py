"""The FedAvg paper's "2NN": two hidden ReLU layers (McMahan et al. 2017)."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field
from torch import nn

from fedprune.registry import Params
from fedprune.tasks.models.base import MODELS, named


class MLPParams(Params):
    hidden: Annotated[int, Field(ge=1)] = 200
    """Width of the two hidden layers (the FedAvg paper's 2NN uses 200)."""


@MODELS.register("mlp", MLPParams)
def mlp(input_shape: tuple[int, ...], num_classes: int, params: MLPParams) -> nn.Module:
    return named(
        flatten=nn.Flatten(),
        fc1=nn.Linear(math.prod(input_shape), params.hidden),
        relu1=nn.ReLU(),
        fc2=nn.Linear(params.hidden, params.hidden),
        relu2=nn.ReLU(),
        out=nn.Linear(params.hidden, num_classes),
    )
