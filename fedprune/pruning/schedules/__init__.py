"""Sparsity schedules, one file each, registered by `kind`."""

from fedprune.pruning.schedules import gradual, iterative, none, oneshot  # noqa: F401 (register)
from fedprune.pruning.schedules.base import SCHEDULES, Schedule


def schedule_for(params) -> Schedule:
    """The schedule its config section describes."""
    return SCHEDULES.get(params.kind)(params)


__all__ = ["SCHEDULES", "Schedule", "schedule_for"]
