"""Adaptive server optimisers (Reddi et al. 2021, "Adaptive Federated Optimization", ICLR,
arXiv 2003.00295) and server momentum (FedAvgM, Hsu et al. 2019, arXiv 1909.06335).

The round's mask-aware average gives the step Δ = average − previous global (minus Reddi's
pseudo-gradient); the server applies it with momentum or Adam/Yogi/Adagrad moments, which are
the strategy's state (`m.<tensor>`, `v.<tensor>`), published with each round and restored on
resume. Defaults are the paper's: β1 = 0.9, β2 = 0.99, τ = 1e-3, moments starting at m = 0,
v = τ²; FedAdagrad without momentum (β1 = 0), as in the paper.

Pruning: moments live only on coordinates the global model keeps. A coordinate pruned (by the
clients' union mask or by the method's server prune) is 0 and its moments are reset, since
they describe a weight that no longer exists. A coordinate regrown (kept now, pruned in the
model the clients started from) has no server history: it takes the clients' average, as
FedAvg would, and its moments start afresh, instead of one damped optimiser step from 0."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from pydantic import Field

from fedprune.records import GlobalModel
from fedprune.strategies.base import STRATEGIES, Strategy, StrategyParams
from fedprune.strategies.buffers import DecodedUpdate
from fedprune.strategies.mask_aware import mask_aware_average

Moments = dict[str, torch.Tensor]


class ServerOptimizer(Strategy):
    """Applies `step` per tensor to the mask-aware average; subclasses name their moments."""

    mask_aware = True
    from_average = True
    moments: ClassVar[tuple[str, ...]] = ("m",)

    def initial(self, key: str) -> float:
        return 0.0

    def step(self, x: torch.Tensor, delta: torch.Tensor, moments: Moments) -> torch.Tensor:
        """The new weights from x, Δ and the moments, which it updates in place."""
        raise NotImplementedError

    def aggregate(self, updates: Sequence[DecodedUpdate], previous: GlobalModel) -> GlobalModel:
        average, mask = mask_aware_average(updates)
        weights, state = {}, {}
        for name, target in average.items():
            if not target.is_floating_point():  # a counter (BatchNorm's batches seen)
                weights[name] = target
                continue
            x = previous.weights[name].to(target.device, target.dtype)
            moments = {}
            for key in self.moments:
                held = previous.state.get(f"{key}.{name}")
                start = torch.full_like(x, self.initial(key))
                moments[key] = start if held is None else held.to(x.device, x.dtype).clone()
            if name not in mask:  # unmasked (biases, norms): every coordinate, every round
                weights[name] = self.step(x, target - x, moments)
            else:
                kept, had = mask[name], previous.mask[name].to(x.device)
                for key, moment in moments.items():
                    moment.copy_(torch.where(had, moment, self.initial(key)))
                stepped = self.step(x, target - x, moments)
                regrown = kept & ~had
                weights[name] = torch.where(kept, torch.where(regrown, target, stepped), 0.0)
                for key, moment in moments.items():
                    moment.copy_(torch.where(kept & ~regrown, moment, self.initial(key)))
            state.update({f"{key}.{name}": moment for key, moment in moments.items()})
        return GlobalModel(weights, mask, state)


class FedAvgMParams(StrategyParams):
    server_lr: float = Field(1.0, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)


@STRATEGIES.register("fedavgm", FedAvgMParams)
class FedAvgM(ServerOptimizer):
    """m ← μ·m + Δ;  x ← x + η·m."""

    params: FedAvgMParams

    def step(self, x: torch.Tensor, delta: torch.Tensor, moments: Moments) -> torch.Tensor:
        m = moments["m"].mul_(self.params.momentum).add_(delta)
        return x + self.params.server_lr * m


class AdaptiveParams(StrategyParams):
    server_lr: float = Field(0.01, gt=0)
    """η, the server's learning rate."""
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0)
    """τ, the adaptivity: larger is closer to server momentum."""


class AdagradParams(StrategyParams):
    server_lr: float = Field(0.1, gt=0)
    beta1: float = Field(0.0, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0)


class Adaptive(ServerOptimizer):
    """m ← β1·m + (1 − β1)·Δ;  v ← rule(v, Δ²);  x ← x + η·m / (√v + τ)."""

    moments = ("m", "v")
    params: AdaptiveParams | AdagradParams

    def initial(self, key: str) -> float:
        return self.params.tau**2 if key == "v" else 0.0

    def second_moment(self, v: torch.Tensor, squared: torch.Tensor) -> None:
        raise NotImplementedError

    def step(self, x: torch.Tensor, delta: torch.Tensor, moments: Moments) -> torch.Tensor:
        beta1, tau = self.params.beta1, self.params.tau
        m = moments["m"].mul_(beta1).add_(delta, alpha=1 - beta1)
        v = moments["v"]
        self.second_moment(v, delta.square())
        return x + self.params.server_lr * m / (v.sqrt() + tau)


@STRATEGIES.register("fedadam", AdaptiveParams)
class FedAdam(Adaptive):
    """v ← β2·v + (1 − β2)·Δ²."""

    params: AdaptiveParams

    def second_moment(self, v: torch.Tensor, squared: torch.Tensor) -> None:
        v.mul_(self.params.beta2).add_(squared, alpha=1 - self.params.beta2)


@STRATEGIES.register("fedyogi", AdaptiveParams)
class FedYogi(Adaptive):
    """v ← v − (1 − β2)·Δ²·sign(v − Δ²): v grows no faster than Adam's, shrinks slower."""

    params: AdaptiveParams

    def second_moment(self, v: torch.Tensor, squared: torch.Tensor) -> None:
        v.sub_((1 - self.params.beta2) * squared * torch.sign(v - squared))


@STRATEGIES.register("fedadagrad", AdagradParams)
class FedAdagrad(Adaptive):
    """v ← v + Δ²."""

    params: AdagradParams

    def second_moment(self, v: torch.Tensor, squared: torch.Tensor) -> None:
        v.add_(squared)
