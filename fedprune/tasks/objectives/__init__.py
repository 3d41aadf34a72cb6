"""Learning tasks, one file each, registered by `task.kind`: what clients minimise and what
the server reports (`fedprune.tasks.objectives.base`)."""

from fedprune.registry import Params, import_entries
from fedprune.tasks.objectives.base import TASKS, Tally, Task


def build_task(params: Params | None = None) -> Task:
    """The task `params` (a `task` section) choose; classification, the default, without."""
    params = params or TASKS.defaults()
    return TASKS.get(params.kind)(params)  # type: ignore[attr-defined]


__all__ = ["TASKS", "Tally", "Task", "build_task"]

import_entries(__name__, __path__)  # every module here registers one entry
