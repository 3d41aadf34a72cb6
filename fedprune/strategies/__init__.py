"""Server strategies, one file each, registered by name (`aggregation.method`)."""

from fedprune.strategies import fedavg, mask_aware  # noqa: F401 (each registers its strategy)
from fedprune.strategies.base import STRATEGIES, Strategy
from fedprune.strategies.buffers import DecodedUpdate, stack_updates

__all__ = ["STRATEGIES", "DecodedUpdate", "Strategy", "stack_updates"]
