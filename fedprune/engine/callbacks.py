"""Callbacks: `callbacks: [package.module:callable, ...]` in the config. Each is called after
every round's evaluation, in both engines, with one `RoundContext`, and returns a dict of
extra metrics, logged to MLflow with the round as the step (`fedprune compare --metric NAME`
then compares them)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

from fedprune.config import ExperimentConfig
from fedprune.errors import UserError
from fedprune.records import ClientUpdate, GlobalModel, RoundMetrics
from fedprune.registry import load_callable


@dataclass(frozen=True)
class RoundContext:
    """What a callback sees of one round."""

    round: int
    global_model: GlobalModel
    """The new global model: `weights` (name → tensor, pruned coordinates zero) and `mask`
    (name → bool tensor, True = kept)."""
    updates: list[ClientUpdate]
    """The round's client updates in client order: `client`, `num_samples`, `payload` (the
    encoded upload; `fedprune.io.codec.decode` gives its weights and mask), `train_loss`."""
    metrics: RoundMetrics
    """The round's built-in metrics (`test` is empty on rounds `eval.every` skips)."""
    config: ExperimentConfig


Callback = Callable[[RoundContext], Mapping[str, float]]
BUILT_IN = {f.name for f in fields(RoundMetrics)}
RESERVED = ("test_", "layer_sparsity.", "site.")
"""Prefixes of the built-in metrics' MLflow names (`test_accuracy`, `layer_sparsity.fc1.weight`)."""


class CallbackError(UserError):
    """A callback that cannot be imported or returned something that is not metrics."""


def load_callbacks(paths: list[str]) -> list[tuple[str, Callback]]:
    """Import each `package.module:callable` (at the start of a run, so a typo fails before
    any round)."""
    loaded = []
    for path in paths:
        try:
            loaded.append((path, load_callable(path, "callbacks")))
        except UserError as error:
            raise CallbackError(str(error)) from None
    return loaded


def run_callbacks(callbacks: list[tuple[str, Callback]], ctx: RoundContext) -> dict[str, float]:
    """Every callback's metrics for the round, checked: numbers, under names of their own."""
    extra: dict[str, float] = {}
    for path, callback in callbacks:
        returned = callback(ctx)
        if not isinstance(returned, Mapping):
            raise CallbackError(
                f"callback {path} returned {type(returned).__name__}, not a dict of metrics"
            )
        for name, value in returned.items():
            if (
                not isinstance(name, str)
                or name in BUILT_IN
                or name.startswith(RESERVED)
                or name in extra
            ):
                raise CallbackError(
                    f"callback {path}: metric name {name!r} is taken (built-in or returned "
                    "by another callback)"
                )
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise CallbackError(
                    f"callback {path}: metric {name!r} is {value!r}, not a number"
                ) from None
            if math.isinf(number):
                raise CallbackError(f"callback {path}: metric {name!r} is infinite")
            extra[name] = number
    return extra
