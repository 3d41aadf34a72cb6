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

from pydantic import Field

from fedprune.records import GlobalModel
from fedprune.registry import Params, Registry
from fedprune.strategies.buffers import DecodedUpdate


class StrategyParams(Params):
    """What every strategy shares: how the server screens the round's updates before it
    combines them (`fedprune.steps.screening`)."""

    min_clients: int = Field(1, ge=1)
    """The round proceeds while at least this many updates pass the checks; with fewer it
    fails and the last good global model stays published."""
    max_upload_bytes: int | None = Field(None, ge=1)
    """Uploads larger than this are rejected; None: 1.25 × the model's dense size + 64 KiB."""
    outlier_norm: float | None = Field(None, gt=1)
    """Reject updates whose norm (model minus the previous global) exceeds this many times
    the round's median; None: no norm check."""


class Strategy:
    mask_aware: ClassVar[bool] = False
    """Averages each weight over the clients that kept it, so clients may upload under
    masks of their own (client-side pruning, FedDST, PruneFL, LotteryFL)."""
    from_average: ClassVar[bool] = False
    """The rule needs only the round's average model, not each client's update, so it
    composes with privacy: central DP hands it the one noised average, and with secure
    aggregation the server sees only the sum (`fedprune.privacy`)."""

    def __init__(self, params: StrategyParams):
        self.params = params

    @classmethod
    def check(cls, params: StrategyParams, clients_per_round: int) -> None:
        """Raise ValueError, naming the setting, if the rule cannot work with this many
        clients a round (Bulyan's n ≥ 4f + 3)."""

    def aggregate(self, updates: Sequence[DecodedUpdate], previous: GlobalModel) -> GlobalModel:
        """The new global model from the round's updates (in client order) and the model
        the clients started from."""
        raise NotImplementedError


STRATEGIES: Registry[type[Strategy]] = Registry(
    "strategy", tag="method", default="mask_aware", base=StrategyParams
)
"""Server strategies, one file each, registered by name (`aggregation.method`)."""
