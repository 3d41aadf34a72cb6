"""One-shot pruning: to `target` after round `at_round`."""

from typing import Annotated

from pydantic import Field

from fedprune.pruning.schedules.base import SCHEDULES, Schedule, Sparsity
from fedprune.registry import Params


class OneShotParams(Params):
    target: Sparsity
    at_round: Annotated[int, Field(ge=1)] = 1
    """The round after which the model is pruned to `target`."""


@SCHEDULES.register("oneshot", OneShotParams)
class OneShot(Schedule):
    params: OneShotParams

    def target(self, round_: int) -> float:
        return self.params.target if round_ >= self.params.at_round else 0.0
