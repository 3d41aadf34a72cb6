"""Sparsity schedules, one file each, registered by `kind`."""

from fedprune.pruning.schedules.base import SCHEDULES, Schedule
from fedprune.registry import import_entries


def schedule_for(params) -> Schedule:
    """The schedule its config section describes."""
    return SCHEDULES.get(params.kind)(params)


__all__ = ["SCHEDULES", "Schedule", "schedule_for"]

import_entries(__name__, __path__)  # every module here registers one entry
