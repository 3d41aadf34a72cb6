"""Regression: mean squared error; RMSE (main) and MAE. One target per sample (a model output
of width 1) or several (width = targets)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fedprune.tasks.objectives.base import TASKS, Tally, Task


def _aligned(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return outputs.reshape(target.shape)


class ErrorTally(Tally):
    def __init__(self) -> None:
        self.squared = torch.zeros((), dtype=torch.float64)
        self.absolute = torch.zeros((), dtype=torch.float64)
        self.count = 0

    def add(self, outputs: torch.Tensor, target: torch.Tensor) -> None:
        error = (_aligned(outputs, target) - target).double()
        self.squared += error.square().sum()
        self.absolute += error.abs().sum()
        self.count += error.numel()

    def metrics(self) -> dict[str, float]:
        count = max(self.count, 1)
        return {"rmse": math.sqrt(float(self.squared) / count), "mae": float(self.absolute) / count}


@TASKS.register("regression")
class Regression(Task):
    main = "rmse"
    higher_is_better = False
    label_dtype = torch.float32

    def loss(self, outputs: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean"):
        losses = F.mse_loss(_aligned(outputs, target), target, reduction="none")
        per_sample = losses.reshape(len(target), -1).mean(1)
        if reduction == "none":
            return per_sample
        return per_sample.sum() if reduction == "sum" else losses.mean()

    def tally(self, outputs: int) -> ErrorTally:
        return ErrorTally()

    def check_labels(self, labels: torch.Tensor, outputs: int) -> str | None:
        width = 1 if labels.dim() == 1 else math.prod(labels.shape[1:])
        if not labels.is_floating_point():
            return f"regression needs float targets, got {labels.dtype}"
        if width != outputs:
            return f"{width} target(s) per sample but the model has {outputs} outputs"
        return None
