"""No pruning: dense training (with method `magnitude`, plain FedAvg)."""

from fedprune.pruning.schedules.base import SCHEDULES, Schedule


@SCHEDULES.register("none")
class NoPruning(Schedule):
    def target(self, round_: int) -> float:
        return 0.0
