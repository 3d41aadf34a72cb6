"""Unstructured magnitude pruning on the server or on each client (Han et al. 2015; schedules
of Zhu & Gupta 2017); with schedule `none` this is dense FedAvg."""

from __future__ import annotations

from typing import Literal

from fedprune.pruning.masks import Mask, Weights, magnitude_mask
from fedprune.pruning.methods.base import METHODS, Method, Model, Needs, PruningParams, RoundInputs


class MagnitudeParams(PruningParams):
    placement: Literal["server", "client"] = "server"
    """`server`: prune the aggregated model, clients train under its mask. `client`: each
    client prunes its local model before upload (mask-aware aggregation)."""


@METHODS.register("magnitude", MagnitudeParams)
class Magnitude(Method):
    params: MagnitudeParams

    @classmethod
    def needs(cls, params: MagnitudeParams) -> Needs:  # type: ignore[override]
        return Needs(mask_aware=params.placement == "client")

    def client_mask(self, local: Weights, mask: Mask, round_: int) -> Mask:
        target = self.target(round_)
        if self.params.placement != "client" or target == 0:
            return mask
        return magnitude_mask(local, mask, target, scope=self.params.scope)

    def server(self, weights: Weights, mask: Mask, *, round_: int, inputs: RoundInputs) -> Model:
        if self.params.placement != "server":
            return weights, mask
        return self.magnitude(weights, mask, round_=round_)

    @classmethod
    def variant(cls, params: MagnitudeParams) -> str:  # type: ignore[override]
        return f"-{params.placement}"
