"""The plain data that flows between the FL steps, the engines and the store: the global
model, a client's update, what a round's clients downloaded, and a round's metrics."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from fedprune.io.codec import floor_bits
from fedprune.pruning.masks import Mask, Weights


@dataclass
class GlobalModel:
    weights: Weights
    mask: Mask
    state: Weights = field(default_factory=dict)
    """The server strategy's state after the round that made this model (optimiser moments),
    published with it and restored on resume; empty for stateless strategies."""


@dataclass(frozen=True)
class ClientUpdate:
    client: int
    num_samples: int
    payload: bytes
    train_loss: float
    importance: bytes = b""
    """Squared gradients summed over local steps (fp16 safetensors), when the method asks."""
    personal_accuracy: float = math.nan
    """With personal masks: the trained model's test accuracy on the client's label mix."""

    @property
    def bytes_up(self) -> int:
        return len(self.payload) + len(self.importance)


@dataclass(frozen=True)
class RoundMetrics:
    round: int
    test_loss: float
    train_loss: float
    sparsity: float
    target_sparsity: float
    nonzero_params: int
    total_params: int
    bytes_up: int
    bytes_down: int
    seconds: float
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    floor_bytes_up: float = 0.0
    """Entropy floor of the uploads: Σ N·H(density) mask bits + value bits, in bytes."""
    floor_bytes_down: float = 0.0
    """The same for the downloads (a values-only download's floor has no mask bits)."""
    floor_ratio_up: float = 0.0
    """bytes_up / floor_bytes_up: how close the real payloads come to the floor."""
    floor_ratio_down: float = 0.0
    values_only_downloads: int = 0
    """Clients that held the broadcast's mask (or their personal mask) and so downloaded
    values only."""
    importance_bytes_up: int = 0
    """Part of bytes_up that carried importance (PruneFL), not model values; the floor ratio
    is of the model payloads alone."""
    personal_accuracy: float = math.nan
    """With personal masks (LotteryFL): the sample-weighted mean over the round's clients of
    their trained model's test accuracy, each class weighted as in the client's data."""
    personal_sparsity: float = math.nan
    """With personal masks: the mean sparsity of the clients' masks (the global model's
    `sparsity` is that of their union)."""
    test: dict[str, float] = field(default_factory=dict)
    """The task's test metrics (e.g. accuracy, macro_f1; rmse, mae), MLflow `test_<name>`;
    empty on rounds `eval.every` skipped."""
    site_test: dict[str, dict[str, float]] = field(default_factory=dict)
    """Site → the task's metrics on that site's own test set, for the sites that hold one;
    MLflow `site.<site>.test_<name>`."""
    extra: dict[str, float] = field(default_factory=dict)
    """What the config's callbacks returned for this round (`callbacks`)."""
    mb_up_total: float = 0.0
    """MB uploaded in rounds 1 … this one: the x-axis of accuracy against bytes in the MLflow
    UI (a chart's x-axis can be any metric)."""
    mb_down_total: float = 0.0
    clients: int = 0
    """Updates the round received (with Poisson sampling the count varies, and may be 0)."""
    epsilon: float = math.nan
    """With `privacy.mechanism`: the ε at `privacy.delta` that every round the model was
    trained for so far has spent (the accountant's; local DP: the worst-off client's)."""
    clip: float = math.nan
    """With `privacy.clip_quantile`: the clip adaptive clipping chose for the next round."""
    secure_seconds: float = math.nan
    """With `privacy.secure_aggregation`: the server's seconds in the protocol (its bytes
    are `bytes_up`, and `bytes_down` beyond the broadcast)."""
    rejected_updates: int = 0
    """Uploads the server's screening rejected (`fedprune.steps.screening`); the byte and
    sample counts above are of the accepted ones."""
    rejected: dict[str, str] = field(default_factory=dict)
    """Client id → why its upload was rejected (its payload is kept in the round's
    `rejected/` folder)."""

    def to_json(self) -> dict:
        """Valid JSON (no bare NaN): a metric not measured is null."""
        return _nan_to_null(asdict(self))

    @classmethod
    def from_json(cls, raw: dict) -> RoundMetrics:
        return cls(**_null_to_nan(raw))

    def flat(self) -> dict[str, float]:
        """MLflow metrics of the round (the round itself is the step); a round that was not
        tested (`eval.every`) has no accuracy or loss."""
        nested = ("round", "layer_sparsity", "test", "site_test", "extra", "rejected")
        values = {k: v for k, v in asdict(self).items() if k not in nested}
        values.update({f"test_{k}": v for k, v in self.test.items()})
        for site, metrics in self.site_test.items():
            values.update({f"site.{site}.test_{k}": v for k, v in metrics.items()})
        values.update({f"layer_sparsity.{k}": v for k, v in self.layer_sparsity.items()})
        values.update(self.extra)
        return {k: v for k, v in values.items() if not math.isnan(v)}

    @property
    def tested(self) -> bool:
        """False on rounds that `eval.every` skipped."""
        return bool(self.test)


@dataclass(frozen=True)
class Downloads:
    """What a round's clients download: the full broadcast (mask + values), or, for a client
    that already holds the broadcast's mask (same `mask_id`), the values alone. Both payloads
    carry the same values, so every client decodes the same model. A client with a personal
    mask (LotteryFL) downloads the global values under its own mask only (`personal`)."""

    full: bytes
    values: bytes | None
    full_clients: int
    values_clients: int
    mask_id: str
    personal: dict[int, bytes] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        shared = len(self.full) * self.full_clients + len(self.values or b"") * self.values_clients
        return shared + sum(map(len, self.personal.values()))

    @property
    def floor_bytes(self) -> float:
        full = floor_bits(self.full) * self.full_clients
        values = floor_bits(self.values) * self.values_clients if self.values else 0
        return (full + values + sum(map(floor_bits, self.personal.values()))) / 8

    @property
    def values_only(self) -> int:
        """Clients that downloaded values alone (they held the mask the values fill)."""
        return self.values_clients + len(self.personal)


@dataclass(frozen=True)
class RoundPlan:
    """A round before training: who trains, what they download, when it began."""

    round: int
    clients: list[int]
    sent: Downloads
    started: float
    """Wall clock (epoch seconds) when the round began, for its duration across pods."""
    rounds_before: int = 0
    """Rounds the global model was trained for in earlier runs (a warm start)."""

    @property
    def model_round(self) -> int:
        """The round across every run the model was trained in: what the pruning schedule,
        the client sampling and the seeds follow, so a warm-started run continues them."""
        return self.rounds_before + self.round

    @property
    def payload(self) -> bytes:
        """The full broadcast every client decodes."""
        return self.sent.full

    def group(self, index: int, size: int) -> list[int]:
        """The clients of one Kubeflow client pod."""
        return self.clients[index * size : (index + 1) * size]


def seed_for(*parts: int) -> int:
    """A well-mixed 63-bit seed from (experiment seed, round, client, …)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


def _nan_to_null(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_null(v) for k, v in value.items()}
    return value


def _null_to_nan(value):
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {k: _null_to_nan(v) for k, v in value.items()}
    return value
