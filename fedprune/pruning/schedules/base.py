"""A sparsity schedule: the target sparsity of the global model after each round."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from fedprune.registry import Params, Registry

Sparsity = Annotated[float, Field(gt=0.0, lt=1.0)]


class Schedule:
    """Target sparsity after round r (rounds count from 1); `params` are its settings."""

    def __init__(self, params: Params):
        self.params = params

    def target(self, round_: int) -> float:
        raise NotImplementedError


SCHEDULES: Registry[type[Schedule]] = Registry("pruning schedule", tag="kind", default="none")
