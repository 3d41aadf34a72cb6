"""Iterative magnitude pruning (Frankle & Carbin 2019, arXiv 1803.03635, the lottery ticket
schedule): after rounds every, 2·every, … remove `rate` of the remaining weights, up to
`target`."""

from typing import Annotated

from pydantic import Field

from fedprune.pruning.schedules.base import SCHEDULES, Schedule, Sparsity
from fedprune.registry import Params


class IterativeParams(Params):
    target: Sparsity
    every: Annotated[int, Field(ge=1)] = 5
    rate: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2


@SCHEDULES.register("iterative", IterativeParams)
class Iterative(Schedule):
    params: IterativeParams

    def target(self, round_: int) -> float:
        steps = round_ // self.params.every
        return min(self.params.target, 1.0 - (1.0 - self.params.rate) ** steps)
