"""A server strategy turns the decoded client models of a round into the new global weights
and mask. One class per rule, one file each, registered by name (`aggregation.method`), with
its settings as a pydantic model beside it (Flower's strategies have the same shape)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from fedprune.pruning.masks import Mask, Weights
from fedprune.registry import Params, Registry
from fedprune.strategies.buffers import DecodedUpdate


class Strategy:
    mask_aware: ClassVar[bool] = False
    """Averages each weight over the clients that kept it, so clients may upload under
    masks of their own (client-side pruning, FedDST, PruneFL, LotteryFL)."""

    def __init__(self, params: Params):
        self.params = params

    def aggregate(self, updates: Sequence[DecodedUpdate]) -> tuple[Weights, Mask]:
        """The new global weights and mask from the round's updates, in client order."""
        raise NotImplementedError


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", tag="method", default="mask_aware")
