"""Pruning methods, one file each, registered by name (`pruning.method`)."""

from fedprune.pruning.methods.base import (
    METHODS,
    Method,
    MethodContext,
    Needs,
    PruningParams,
    RoundInputs,
    Trainer,
)
from fedprune.registry import import_entries

__all__ = [
    "METHODS",
    "Method",
    "MethodContext",
    "Needs",
    "PruningParams",
    "RoundInputs",
    "Trainer",
]

import_entries(__name__, __path__)  # every module here registers one entry
