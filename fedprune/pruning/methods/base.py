"""What a pruning method adds to the FL steps: the base class every method extends, and its
settings. One file per method beside this one; docs/methods.md describes each with its paper.

A method can set the starting mask (`start`), change a client's mask before, during or after
local training (`client_start`, `regrowth`, `client_mask`), ask clients for squared gradients
(`wants_importance`), and decide the next global mask on the server (`server`). The base class
does nothing, so a method only states where it differs. What it needs from the rest of the
system it declares as class attributes (capabilities), never tested by name elsewhere.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar, Literal

from torch import nn

from fedprune.io.codec import decode
from fedprune.pruning.channels import macs
from fedprune.pruning.masks import Mask, Weights, apply_mask_, magnitude_mask
from fedprune.pruning.schedules import SCHEDULES, Schedule, schedule_for
from fedprune.registry import Params, Registry
from fedprune.training.local import Regrowth

Model = tuple[Weights, Mask]
Trainer = Callable[..., Weights]
"""trainer(client, weights, mask, *, epochs): local training on one client's data, returning
the trained weights (PruneFL's initial prune)."""


class PruningParams(Params):
    """Settings every method has; a method's own settings extend these."""

    schedule: SCHEDULES.section() = SCHEDULES.defaults()  # type: ignore[valid-type]
    scope: Literal["global", "layerwise"] = "global"
    include_bias_and_norm: bool = False


@dataclass(frozen=True)
class MethodContext:
    """What a method knows of the experiment besides its settings."""

    model: nn.Module
    """The model clients train (the method builds its own copies to serve or shrink)."""
    input_shape: tuple[int, ...]
    rounds: int


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


@dataclass(frozen=True)
class Needs:
    """What a method requires of the rest of the experiment (checked by the config)."""

    mask_aware: bool = False
    """The server must average each weight over the clients that kept it (strategy
    capability `mask_aware`): clients upload under masks of their own."""
    vectorizable: bool = True
    """Clients may train together (`client.vectorize`): every client trains the global mask
    in the full-shape model."""
    beyond_a_site: bool = False
    """A step reads a client's data or state outside that client's site (PruneFL's initial
    prune on the server; personal masks kept in the run's store): the data cannot be kept
    at sites (`kubeflow.sites`)."""
    private: bool = True
    """Differential privacy can account for it (`privacy.mechanism`): clients use nothing of
    their data but the privatised training, and the server step reads only the aggregate (no
    importance uploads, no masks chosen by accuracy, by dense gradients or by the clients'
    mask counts)."""
    classification: bool = False
    """Clients are scored by accuracy (on their validation rows and label mix): the task
    must be classification."""


def pruned(weights: Weights, mask: Mask) -> Model:
    """A copy of `weights` with the pruned coordinates zeroed, and the mask."""
    weights = {name: t.clone() for name, t in weights.items()}
    apply_mask_(weights, mask)
    return weights, mask


class Method:
    trains_shrunk: ClassVar[bool] = False
    """Clients train `learner(weights, mask)`, the physically smaller model (structured)."""
    prunes_biases: ClassVar[bool] = False
    """Biases, norm parameters and BatchNorm's running statistics are masked whatever
    `include_bias_and_norm` says (a removed channel takes them along)."""
    personal: bool = False
    """Each client keeps its own mask across rounds (LotteryFL); the round driver keeps it in
    the client state."""

    def __init__(self, params: PruningParams, ctx: MethodContext):
        self.params = params
        self.ctx = ctx
        self.schedule: Schedule = schedule_for(params.schedule)
        self.serving = copy.deepcopy(ctx.model)  # serving never touches the training model

    @classmethod
    def needs(cls, params: PruningParams) -> Needs:
        return Needs()

    @classmethod
    def check(cls, params: PruningParams, num_clients: int) -> None:
        """Raise ValueError, naming the field, for settings this experiment cannot use."""

    def target(self, round_: int) -> float:
        return self.schedule.target(round_)

    def start(self, weights: Weights, mask: Mask, train: Trainer) -> Model:
        """The round-0 global model (fresh weights and a full mask come in)."""
        return weights, mask

    def client_start(
        self, weights: Weights, mask: Mask, *, round_: int, accuracy: Callable[[Weights], float]
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

    def server(self, weights: Weights, mask: Mask, *, round_: int, inputs: RoundInputs) -> Model:
        """The next global model from the aggregate and the rest of the round (`inputs`)."""
        return weights, mask

    def skipped(self, mask: Mask) -> list[str]:
        """The model's weight tensors (2-D or more: matrices, kernels, embeddings, recurrent
        weights) that the round-0 `mask` leaves out: layers this method does not understand
        (structured pruning: those torch-pruning cannot couple to a prunable channel)."""
        weights = self.ctx.model.state_dict()
        return [
            n for n, t in weights.items() if t.is_floating_point() and t.dim() > 1 and n not in mask
        ]

    def served(self, weights: Weights, mask: Mask) -> nn.Module:
        """The model as it runs (tests, inference): here full shape with zeros in place, in
        a model of its own (the one clients train in is left alone)."""
        self.serving.load_state_dict(weights)
        return self.serving

    def costs(
        self, weights: Weights, mask: Mask, personal: Iterable[Mask] = ()
    ) -> dict[str, float]:
        """Inference cost per sample: MACs of the dense model, of the model as it runs
        (smaller only when channels were removed), and with sparse kernels; with `personal`
        masks (LotteryFL) also the clients' own models with sparse kernels, on average."""
        shape = self.ctx.input_shape
        served = self.served(weights, mask)
        remaining = None if self.trains_shrunk else mask  # a shrunk model is dense inside
        costs = {
            "macs_dense": macs(self.ctx.model, shape),
            "macs": macs(served, shape),
            "macs_sparse_kernels": macs(served, shape, remaining),
        }
        own = [macs(self.ctx.model, shape, m) for m in personal]
        if own:
            costs["personal_macs_sparse_kernels"] = sum(own) / len(own)
        return costs

    @classmethod
    def tag(cls, params: PruningParams) -> str:
        """A short name for what a run did, for `fedprune compare`: `dense`,
        `magnitude-server-gradual`, `feddst-oneshot`, `lottery-personal-iterative`, …"""
        kind = params.schedule.kind  # type: ignore[attr-defined]
        name = params.method  # type: ignore[attr-defined]
        return "dense" if kind == "none" else f"{name}{cls.variant(params)}-{kind}"

    @classmethod
    def variant(cls, params: PruningParams) -> str:
        """What the tag adds after the method's name (`-client`, `-personal`)."""
        return ""

    def magnitude(self, weights: Weights, mask: Mask, *, round_: int, scope: str = "") -> Model:
        """Prune by magnitude to the schedule's target for `round_`."""
        target = self.target(round_)
        if target == 0:
            return weights, mask
        chosen = magnitude_mask(weights, mask, target, scope=scope or self.params.scope)
        return pruned(weights, chosen)


METHODS: Registry[type[Method]] = Registry(
    "pruning method", tag="method", default="magnitude", base=PruningParams
)
