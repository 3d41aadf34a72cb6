"""Server strategies, one file each, registered by name (`aggregation.method`)."""

from fedprune.registry import import_entries
from fedprune.strategies.base import STRATEGIES, Strategy, StrategyParams
from fedprune.strategies.buffers import DecodedUpdate, stack_updates

__all__ = ["STRATEGIES", "DecodedUpdate", "Strategy", "StrategyParams", "stack_updates"]

import_entries(__name__, __path__)  # every module here registers one entry
