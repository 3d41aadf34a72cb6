"""The FL steps as plain functions: plain data in, plain data out, no I/O.

Both engines call these and nothing else for the science: the local engine in one process,
the Kubeflow components one step per pod.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from fedprune.aggregation import AGGREGATORS, DecodedUpdate
from fedprune.compression import decode, encode, encode_values, floor_bits, mask_id
from fedprune.config import ExperimentConfig
from fedprune.data import ImageDataset, load_dataset
from fedprune.models import build_model
from fedprune.partition import Partition, partition
from fedprune.pruning import (
    Mask,
    Weights,
    apply_mask_,
    full_mask,
    magnitude_mask,
    measure_sparsity,
    prunable_names,
    schedule_for,
)
from fedprune.training import Evaluation, local_train
from fedprune.training import evaluate as evaluate_model
from fedprune.vectorized import train_together


@dataclass
class GlobalModel:
    weights: Weights
    mask: Mask


@dataclass(frozen=True)
class ClientUpdate:
    client: int
    num_samples: int
    payload: bytes
    train_loss: float


@dataclass(frozen=True)
class RoundMetrics:
    round: int
    test_accuracy: float
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
    """Clients that held the broadcast's mask and so downloaded its values only."""

    def flat(self) -> dict[str, float]:
        """MLflow metrics of the round (the round itself is the step); a round that was not
        tested (`eval.every`) has no accuracy or loss."""
        values = {k: v for k, v in asdict(self).items() if k not in ("round", "layer_sparsity")}
        values.update({f"layer_sparsity.{k}": v for k, v in self.layer_sparsity.items()})
        return {k: v for k, v in values.items() if not math.isnan(v)}

    @property
    def tested(self) -> bool:
        """False on rounds that `eval.every` skipped."""
        return not math.isnan(self.test_accuracy)


def seed_for(*parts: int) -> int:
    """A well-mixed 63-bit seed from (experiment seed, round, client, …)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


def new_model(cfg: ExperimentConfig, data: ImageDataset) -> nn.Module:
    return build_model(cfg.model, data.input_shape, data.num_classes, cfg.seed)


def load_data(cfg: ExperimentConfig) -> ImageDataset:
    """The experiment's data set, subsets applied, as every engine and pod loads it."""
    return load_dataset(cfg.data.dataset, None, cfg.data.train_subset, cfg.data.test_subset)


def partition_data(data: ImageDataset, cfg: ExperimentConfig) -> Partition:
    return partition(data.y_train.numpy(), cfg.data.num_clients, cfg.data.partition, cfg.seed)


def init_global(model: nn.Module, cfg: ExperimentConfig) -> GlobalModel:
    weights = {name: t.detach().clone() for name, t in model.state_dict().items()}
    names = prunable_names(weights, cfg.pruning.include_bias_and_norm)
    return GlobalModel(weights=weights, mask=full_mask(weights, names))


def sample_clients(cfg: ExperimentConfig, round_: int) -> list[int]:
    rng = np.random.default_rng(seed_for(cfg.seed, round_))
    chosen = rng.choice(cfg.data.num_clients, size=cfg.clients_per_round(), replace=False)
    return sorted(int(c) for c in chosen)


def broadcast(global_model: GlobalModel, cfg: ExperimentConfig) -> bytes:
    return encode(global_model.weights, global_model.mask, cfg.compression, cfg.seed)


@dataclass(frozen=True)
class Downloads:
    """What a round's clients download: the full broadcast (mask + values), or, for a client
    that already holds the broadcast's mask (same `mask_id`), the values alone. Both payloads
    carry the same values, so every client decodes the same model."""

    full: bytes
    values: bytes | None
    full_clients: int
    values_clients: int
    mask_id: str

    @property
    def bytes(self) -> int:
        return len(self.full) * self.full_clients + len(self.values or b"") * self.values_clients

    @property
    def floor_bytes(self) -> float:
        full = floor_bits(self.full) * self.full_clients
        return (full + (floor_bits(self.values) * self.values_clients if self.values else 0)) / 8


def downloads(
    global_model: GlobalModel,
    payload: bytes,
    clients: list[int],
    held: dict[int, str],
    cfg: ExperimentConfig,
) -> Downloads:
    """Who downloads what, given `payload` (the full broadcast) and `held`, the `mask_id` each
    client last received (the caller's record of client state; after the round every sampled
    client holds `Downloads.mask_id`)."""
    current = mask_id(global_model.mask)
    reuse = cfg.compression.values_only_downloads and cfg.compression.encoding == "sparse"
    holders = sum(held.get(c) == current for c in clients) if reuse else 0
    values = (
        encode_values(global_model.weights, global_model.mask, cfg.compression, cfg.seed)
        if holders
        else None
    )
    return Downloads(payload, values, len(clients) - holders, holders, current)


def train_clients(
    model: nn.Module,
    payload: bytes,
    data: ImageDataset,
    shards: Partition,
    clients: list[int],
    round_: int,
    cfg: ExperimentConfig,
) -> list[ClientUpdate]:
    """Each client starts from the decoded broadcast, trains under its mask (one after another
    in the one shared `model`, or all together with `client.vectorize`), prunes locally when
    placement is `client`, and encodes its model for upload."""
    weights, mask = decode(payload)
    generators = [
        torch.Generator().manual_seed(seed_for(cfg.seed, round_, client)) for client in clients
    ]
    shard_rows = [torch.from_numpy(shards[client]) for client in clients]
    if cfg.client.vectorize:
        trained, losses = train_together(
            model, weights, mask, data.x_train, data.y_train, shard_rows, generators, cfg.client
        )
    else:
        trained, losses = [], []
        for rows, generator in zip(shard_rows, generators, strict=True):
            model.load_state_dict(weights)
            x, y = data.x_train[rows], data.y_train[rows]
            losses.append(local_train(model, mask, x, y, cfg.client, generator))
            trained.append({name: t.detach().clone() for name, t in model.state_dict().items()})
    target = schedule_for(cfg.pruning).target(round_)
    updates = []
    for client, rows, local, loss in zip(clients, shard_rows, trained, losses, strict=True):
        kept = mask
        if cfg.pruning.placement == "client" and target > 0:
            kept = magnitude_mask(local, mask, target, cfg.pruning.scope)
            apply_mask_(local, kept)
        upload = encode(local, kept, cfg.compression, seed_for(cfg.seed, round_, client))
        updates.append(ClientUpdate(client, len(rows), upload, loss))
    return updates


def aggregate(
    updates: list[ClientUpdate], cfg: ExperimentConfig, device: str = "cpu"
) -> GlobalModel:
    """Combine the client models, in client order (so every engine sums in the same order),
    on `device` (a GPU when the aggregation pod has one); the result comes back on the CPU."""
    decoded = []
    for update in sorted(updates, key=lambda u: u.client):
        weights, mask = decode(update.payload)
        decoded.append(
            DecodedUpdate(
                {name: t.to(device) for name, t in weights.items()},
                {name: m.to(device) for name, m in mask.items()},
                update.num_samples,
            )
        )
    weights, mask = AGGREGATORS[cfg.aggregation.method]().aggregate(decoded)
    return GlobalModel(
        weights={name: t.cpu() for name, t in weights.items()},
        mask={name: m.cpu() for name, m in mask.items()},
    )


def server_prune(global_model: GlobalModel, round_: int, cfg: ExperimentConfig) -> GlobalModel:
    """Prune the aggregated model to the schedule's target (placement `server` only)."""
    target = schedule_for(cfg.pruning).target(round_)
    if cfg.pruning.placement != "server" or target == 0:
        return global_model
    mask = magnitude_mask(global_model.weights, global_model.mask, target, cfg.pruning.scope)
    weights = {name: t.clone() for name, t in global_model.weights.items()}
    apply_mask_(weights, mask)
    return GlobalModel(weights=weights, mask=mask)


def evaluate(
    model: nn.Module, global_model: GlobalModel, data: ImageDataset, cfg: ExperimentConfig
) -> Evaluation:
    """Test accuracy and loss of the global model."""
    model.load_state_dict(global_model.weights)
    return evaluate_model(model, data.x_test, data.y_test, cfg.eval.batch_size)


def is_test_round(round_: int, cfg: ExperimentConfig) -> bool:
    return round_ % cfg.eval.every == 0 or round_ == cfg.rounds


def round_metrics(
    round_: int,
    global_model: GlobalModel,
    model: nn.Module,
    data: ImageDataset,
    updates: list[ClientUpdate],
    sent: Downloads,
    seconds: float,
    cfg: ExperimentConfig,
) -> RoundMetrics:
    """Evaluate the new global model (on test rounds) and add what the round cost in bytes
    and seconds."""
    untested = Evaluation(accuracy=math.nan, loss=math.nan)
    result = evaluate(model, global_model, data, cfg) if is_test_round(round_, cfg) else untested
    report = measure_sparsity(global_model.weights, global_model.mask)
    samples = sum(u.num_samples for u in updates)
    bytes_up = sum(len(u.payload) for u in updates)
    floor_up = sum(floor_bits(u.payload) for u in updates) / 8
    bytes_down = sent.bytes
    floor_down = sent.floor_bytes
    return RoundMetrics(
        round=round_,
        test_accuracy=result.accuracy,
        test_loss=result.loss,
        train_loss=sum(u.train_loss * u.num_samples for u in updates) / samples,
        sparsity=report.sparsity,
        target_sparsity=schedule_for(cfg.pruning).target(round_),
        nonzero_params=report.nonzero,
        total_params=report.total,
        bytes_up=bytes_up,
        bytes_down=bytes_down,
        seconds=seconds,
        layer_sparsity=report.per_layer,
        floor_bytes_up=floor_up,
        floor_bytes_down=floor_down,
        floor_ratio_up=bytes_up / floor_up if floor_up else math.nan,
        floor_ratio_down=bytes_down / floor_down if floor_down else math.nan,
        values_only_downloads=sent.values_clients,
    )
