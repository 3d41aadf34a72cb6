"""A server strategy turns the decoded client models of a round into the new global model.
One class per rule, one file each, registered by name (`aggregation.method`), with its
settings as a pydantic model beside it (Flower's strategies have the same shape).

A rule sees the previous global model (its weights, mask and the rule's own state, tensors
such as optimiser moments) and the round's updates with their sample counts; it returns the
new weights, mask and state. The state travels with the global model: published with each
round, restored on resume, handed from one Kubeflow aggregate pod to the next."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from fedprune.records import GlobalModel
from fedprune.registry import Params, Registry
from fedprune.strategies.buffers import DecodedUpdate


class Strategy:
    mask_aware: ClassVar[bool] = False
    """Averages each weight over the clients that kept it, so clients may upload under
    masks of their own (client-side pruning, FedDST, PruneFL, LotteryFL)."""

    def __init__(self, params: Params):
        self.params = params

    @classmethod
    def check(cls, params: Params, clients_per_round: int) -> None:
        """Raise ValueError, naming the setting, if the rule cannot work with this many
        clients a round (Bulyan's n ≥ 4f + 3)."""

    def aggregate(self, updates: Sequence[DecodedUpdate], previous: GlobalModel) -> GlobalModel:
        """The new global model from the round's updates (in client order) and the model
        the clients started from."""
        raise NotImplementedError


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", tag="method", default="mask_aware")
"""Server strategies, one file each, registered by name (`aggregation.method`)."""
