"""Zhu & Gupta's gradual schedule (2017, arXiv 1710.01878): a cubic ramp from 0 after
`start_round` to `target` at `end_round`, s_t = s_f (1 - (1 - (t - a) / (b - a))^3)."""

from typing import Annotated

from pydantic import Field, model_validator

from fedprune.pruning.schedules.base import SCHEDULES, Schedule, Sparsity
from fedprune.registry import Params


class GradualParams(Params):
    target: Sparsity
    start_round: Annotated[int, Field(ge=1)] = 1
    end_round: Annotated[int, Field(ge=1)] = 10

    @model_validator(mode="after")
    def _ordered(self) -> "GradualParams":
        if self.end_round < self.start_round:
            raise ValueError("pruning.schedule.end_round must be >= start_round")
        return self


@SCHEDULES.register("gradual", GradualParams)
class Gradual(Schedule):
    params: GradualParams

    def target(self, round_: int) -> float:
        start, end = self.params.start_round, self.params.end_round
        if round_ < start:
            return 0.0
        if round_ >= end:
            return self.params.target
        progress = (round_ - start) / (end - start)
        return self.params.target * (1.0 - (1.0 - progress) ** 3)
