"""Pruning methods: what each adds to the FL steps, one small class per method, chosen by
`pruning.method`. docs/methods.md describes each with its source paper.

A method can set the starting mask (`start`), change a client's mask during or after local
training (`regrowth`, `client_mask`), ask clients for squared gradients (`wants_importance`),
and decide the next global mask on the server (`server`). The base class does nothing, so a
method only states where it differs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from fedprune.compression import decode, mask_id
from fedprune.config import ExperimentConfig
from fedprune.data import ImageDataset
from fedprune.pruning import (
    Mask,
    Weights,
    apply_mask_,
    magnitude_mask,
    measure_sparsity,
    schedule_for,
)
from fedprune.structured import ChannelGraph, macs, shrink, slice_weights, structured_mask
from fedprune.training import Regrowth, local_train

Model = tuple[Weights, Mask]
Trainer = Callable[[Weights, Mask], Weights]
"""Trains a model on one client's data and returns its weights (for PruneFL's initial prune)."""


def _pruned(weights: Weights, mask: Mask) -> Model:
    weights = {name: t.clone() for name, t in weights.items()}
    apply_mask_(weights, mask)
    return weights, mask


@dataclass(frozen=True)
class RoundInputs:
    """What the server has of a round besides the aggregate: the broadcast the clients
    started from, and the clients' mean importance when they sent it (PruneFL)."""

    broadcast: bytes
    importance: Weights | None = None

    @cached_property
    def previous(self) -> Weights:
        """The global weights the clients started from, as they decoded them (decoded only
        for a method that asks: LotteryFL's personal masks)."""
        return decode(self.broadcast)[0]


class Method:
    trains_shrunk = False
    """Clients train `learner(weights, mask)`, the physically smaller model (structured)."""
    personal = False
    """Each client keeps its own mask across rounds (LotteryFL); the engines store them."""

    def __init__(self, cfg: ExperimentConfig, model: nn.Module, input_shape: tuple[int, ...]):
        self.cfg = cfg
        self.schedule = schedule_for(cfg.pruning)
        self.model = model
        self.input_shape = input_shape

    def target(self, round_: int) -> float:
        return self.schedule.target(round_)

    def start(self, weights: Weights, mask: Mask, train_one: Trainer) -> Model:
        """The round-0 global model (fresh weights and a full mask come in)."""
        return weights, mask

    def client_start(
        self, weights: Weights, mask: Mask, round_: int, accuracy: Callable[[Weights], float]
    ) -> Model:
        """A personal method's start for one client, from the received weights and the
        client's own mask; `accuracy` scores weights on the client's validation rows."""
        return weights, mask

    def regrowth(self, round_: int, steps: int) -> Regrowth | None:
        return None

    def wants_importance(self, round_: int) -> bool:
        return False

    def client_mask(self, local: Weights, mask: Mask, round_: int) -> Mask:
        """The mask a client uploads under, after local training."""
        return mask

    def server(self, weights: Weights, mask: Mask, round_: int, inputs: RoundInputs) -> Model:
        """The next global model from the aggregate and the rest of the round (`inputs`)."""
        return weights, mask

    def served(self, weights: Weights, mask: Mask) -> nn.Module:
        """The model as it runs (tests, inference): here full shape with zeros in place."""
        self.model.load_state_dict(weights)
        return self.model

    def costs(
        self, weights: Weights, mask: Mask, personal: Iterable[Mask] = ()
    ) -> dict[str, float]:
        """Inference cost per sample: MACs of the dense model, of the model as it runs
        (smaller only when channels were removed), and with sparse kernels; with `personal`
        masks (LotteryFL) also the clients' own models with sparse kernels, on average."""
        served = self.served(weights, mask)
        dense = macs(self.model, self.input_shape)
        running = macs(served, self.input_shape)
        remaining = None if self.trains_shrunk else mask  # a shrunk model is dense inside
        costs = {
            "macs_dense": dense,
            "macs": running,
            "macs_sparse_kernels": macs(served, self.input_shape, remaining),
        }
        own = [macs(self.model, self.input_shape, m) for m in personal]
        if own:
            costs["personal_macs_sparse_kernels"] = sum(own) / len(own)
        return costs

    def _magnitude(self, weights: Weights, mask: Mask, round_: int, scope: str = "") -> Model:
        target = self.target(round_)
        if target == 0:
            return weights, mask
        scope = scope or self.cfg.pruning.scope
        return _pruned(weights, magnitude_mask(weights, mask, target, scope))


class Magnitude(Method):
    """Unstructured magnitude pruning on the server or on each client (Han et al. 2015;
    schedules of Zhu & Gupta 2017); with schedule `none` this is dense FedAvg."""

    def client_mask(self, local: Weights, mask: Mask, round_: int) -> Mask:
        target = self.target(round_)
        if self.cfg.pruning.placement != "client" or target == 0:
            return mask
        return magnitude_mask(local, mask, target, self.cfg.pruning.scope)

    def server(self, weights: Weights, mask: Mask, round_: int, inputs: RoundInputs) -> Model:
        if self.cfg.pruning.placement != "server":
            return weights, mask
        return self._magnitude(weights, mask, round_)


class Structured(Method):
    """Whole channels and neurons, by L2 norm, to the target share of parameters; clients
    train the physically smaller model (see fedprune.structured)."""

    trains_shrunk = True

    def __init__(self, cfg: ExperimentConfig, model: nn.Module, input_shape: tuple[int, ...]):
        super().__init__(cfg, model, input_shape)
        self.graph = ChannelGraph.of(model, input_shape)
        self._shrunk: tuple[str, nn.Module] | None = None

    def served(self, weights: Weights, mask: Mask) -> nn.Module:
        model = self.learner(weights, mask)
        model.load_state_dict(slice_weights(weights, mask))
        return model

    def learner(self, weights: Weights, mask: Mask) -> nn.Module:
        """The physically pruned model for this mask, built once per mask and reused."""
        key = mask_id(mask)
        if self._shrunk is None or self._shrunk[0] != key:
            self._shrunk = (key, shrink(self.graph, weights, mask))
        return self._shrunk[1]

    def server(self, weights: Weights, mask: Mask, round_: int, inputs: RoundInputs) -> Model:
        target = self.target(round_)
        if target == 0:
            return weights, mask
        return _pruned(weights, structured_mask(self.graph, weights, mask, target))


class Lottery(Method):
    """Iterative magnitude pruning with rewind (Frankle & Carbin 2019; in FL: LotteryFL, Li et
    al. 2020, arXiv 2008.03371): whenever the target rises, prune by magnitude and reset the
    surviving weights to their initial values. With `lottery.personal` (LotteryFL proper) each
    client does this to its own mask, when the global model is accurate enough on its data."""

    def __init__(self, cfg: ExperimentConfig, model: nn.Module, input_shape: tuple[int, ...]):
        super().__init__(cfg, model, input_shape)
        self.initial = {name: t.detach().clone() for name, t in model.state_dict().items()}
        self.personal = cfg.pruning.lottery.personal

    def client_start(
        self, weights: Weights, mask: Mask, round_: int, accuracy: Callable[[Weights], float]
    ) -> Model:
        received = _pruned(weights, mask)
        sparsity = measure_sparsity({}, mask).sparsity
        masked = sum(keep.numel() for keep in mask.values())
        target = self.target(round_)
        at_target = (target - sparsity) * masked <= len(mask)  # rounding: ≤ 1 weight per tensor
        if at_target or accuracy(received[0]) < self.cfg.pruning.lottery.accuracy_threshold:
            return received
        step = 1.0 - (1.0 - sparsity) * (1.0 - self.cfg.pruning.schedule.rate)
        chosen = magnitude_mask(received[0], mask, min(target, step), self.cfg.pruning.scope)
        return _pruned(self.initial, chosen)

    def server(self, weights: Weights, mask: Mask, round_: int, inputs: RoundInputs) -> Model:
        if self.personal:  # a weight no sampled client kept keeps its last global value
            previous = inputs.previous
            kept = {n: torch.where(keep, weights[n], previous[n]) for n, keep in mask.items()}
            return weights | kept, {n: torch.ones_like(keep) for n, keep in mask.items()}
        if self.target(round_) <= self.target(round_ - 1):
            return weights, mask
        _, mask = self._magnitude(weights, mask, round_)
        return _pruned(self.initial, mask)


class FedDST(Method):
    """Federated dynamic sparse training (Bibikar et al., AAAI 2022, arXiv 2112.09824):
    sparse from round 0; in readjustment rounds each client drops its smallest kept weights
    halfway through local training and regrows as many where the dense gradient is largest
    (RigL, Evci et al. 2020); the server aggregates (union of masks) and prunes back to the
    target by magnitude, so sparsity stays constant while the mask moves. Sparsity is per
    layer (the same share in every layer, as in FedDST's uniform setting): a global cut of the
    untrained model would empty the widest layer, whose initial weights are the smallest."""

    def start(self, weights: Weights, mask: Mask, train_one: Trainer) -> Model:
        return self._magnitude(weights, mask, 1, "layerwise")

    def regrowth(self, round_: int, steps: int) -> Regrowth | None:
        if round_ % self.cfg.pruning.feddst.every or self.target(round_) == 0:
            return None
        decay = 0.5 * (1.0 + math.cos(math.pi * (round_ - 1) / self.cfg.rounds))
        share = self.cfg.pruning.feddst.fraction * decay
        return Regrowth(at_step=steps // 2, adjust=lambda w, g, m: prune_and_regrow(w, g, m, share))

    def server(self, weights: Weights, mask: Mask, round_: int, inputs: RoundInputs) -> Model:
        return self._magnitude(weights, mask, round_, "layerwise")


def prune_and_regrow(weights: Weights, grads: Weights, mask: Mask, share: float) -> Mask:
    """Per tensor: drop `share` of the kept weights with the smallest |w|, then keep as many
    new ones where |gradient| is largest among those not kept before."""
    new = {}
    for name, keep in mask.items():
        kept = int(keep.sum())
        count = min(round(share * kept), keep.numel() - kept)
        if count == 0:
            new[name] = keep
            continue
        flat_keep = keep.reshape(-1)
        magnitude = torch.where(flat_keep, weights[name].reshape(-1).abs(), math.inf)
        dropped = torch.topk(magnitude, count, largest=False).indices
        growth = torch.where(flat_keep, -math.inf, grads[name].reshape(-1).abs())
        grown = torch.topk(growth, count).indices
        flat = flat_keep.clone()
        flat[dropped] = False
        flat[grown] = True
        new[name] = flat.view_as(keep)
    return new


class PruneFL(Method):
    """Adaptive pruning after PruneFL (Jiang et al., IEEE TNNLS 2022, arXiv 1909.12326): one
    client trains the fresh model on its own data and prunes it by magnitude before round 1;
    every `every` rounds the clients send the squared gradients of all parameters summed over
    their local steps, and the server keeps the coordinates with the largest mean importance.
    Here the density is fixed by the schedule (PruneFL also adapts it to measured timings)."""

    def start(self, weights: Weights, mask: Mask, train_one: Trainer) -> Model:
        return self._magnitude(train_one(weights, mask), mask, 1)

    def wants_importance(self, round_: int) -> bool:
        return round_ % self.cfg.pruning.prunefl.every == 0 and self.target(round_) > 0

    def server(self, weights: Weights, mask: Mask, round_: int, inputs: RoundInputs) -> Model:
        importance = inputs.importance
        if importance is None:
            return self._magnitude(weights, mask, round_)
        everything = {name: torch.ones_like(keep) for name, keep in mask.items()}
        chosen = magnitude_mask(importance, everything, self.target(round_), self.cfg.pruning.scope)
        return _pruned(weights, chosen)


METHODS: dict[str, type[Method]] = {
    "magnitude": Magnitude,
    "structured": Structured,
    "feddst": FedDST,
    "prunefl": PruneFL,
    "lottery": Lottery,
}


def method_for(cfg: ExperimentConfig, model: nn.Module, input_shape: tuple[int, ...]) -> Method:
    return METHODS[cfg.pruning.method](cfg, model, input_shape)


def initial_training(
    model: nn.Module, data: ImageDataset, rows: torch.Tensor, cfg: ExperimentConfig
) -> Trainer:
    """PruneFL's trainer: `prunefl.initial_epochs` of local training on the training rows
    `rows`, seeded by the experiment (the rows are read only if a method trains)."""
    client = cfg.client.model_copy(update={"epochs": cfg.pruning.prunefl.initial_epochs})

    def train(weights: Weights, mask: Mask) -> Weights:
        x, y = data.x_train[rows], data.y_train[rows]
        model.load_state_dict(weights)
        generator = torch.Generator().manual_seed(cfg.seed)
        local_train(model, mask, x, y, client, generator)
        return {name: t.detach().clone() for name, t in model.state_dict().items()}

    return train
