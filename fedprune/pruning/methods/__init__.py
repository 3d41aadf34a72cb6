"""Pruning methods, one file each, registered by name (`pruning.method`)."""

from fedprune.pruning.methods import (  # noqa: F401 (each module registers its method)
    feddst,
    lottery,
    magnitude,
    prunefl,
    structured,
)
from fedprune.pruning.methods.base import (
    METHODS,
    Method,
    MethodContext,
    Needs,
    PruningParams,
    RoundInputs,
    Trainer,
)

__all__ = [
    "METHODS",
    "Method",
    "MethodContext",
    "Needs",
    "PruningParams",
    "RoundInputs",
    "Trainer",
]
