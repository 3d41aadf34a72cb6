"""The task registry: a task is the loss clients minimise, the metrics the server reports
on the test set (MLflow `test_<metric>`) and which of them is the main one (the terminal
table, `compare` and the plots show it)."""

from __future__ import annotations

from typing import ClassVar

import torch

from fedprune.registry import Params, Registry


class Tally:
    """Sums over test batches, so a test set is scored without keeping its outputs."""

    def add(self, outputs: torch.Tensor, target: torch.Tensor) -> None: ...

    def metrics(self) -> dict[str, float]: ...

    def per_class(self) -> torch.Tensor | None:
        """Accuracy on each class's samples (NaN for a class with none), where it means
        something (classification); LotteryFL scores clients on their label mix with it."""
        return None


class Task:
    main: ClassVar[str]
    """The metric a run is judged by."""
    higher_is_better: ClassVar[bool]
    label_dtype: ClassVar[torch.dtype]

    def __init__(self, params: Params):
        self.params = params

    def loss(self, outputs: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean"):
        """The loss: "mean" over the batch (training), "sum" (test sets: the server sums
        batches), or "none": one per sample (vectorised clients weight samples)."""
        raise NotImplementedError

    def tally(self, outputs: int) -> Tally:
        """A fresh tally for a model with `outputs` outputs."""
        raise NotImplementedError

    def check_labels(self, labels: torch.Tensor, outputs: int) -> str | None:
        """What is wrong with these labels for a model of `outputs` outputs, or None."""
        return None


TASKS: Registry[type[Task]] = Registry("task", tag="kind", default="classification")
