"""The FL steps as plain functions: plain data in, plain data out, no I/O.

Both engines call these and nothing else for the science: the local engine in one process,
the Kubeflow components one step per pod.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from fedprune.aggregation import AGGREGATORS, DecodedUpdate
from fedprune.compression import decode, encode, encode_values, floor_bits, mask_id
from fedprune.config import ExperimentConfig
from fedprune.data import DataShape, ImageDataset, load_dataset
from fedprune.methods import Method, RoundInputs, initial_training, method_for
from fedprune.models import build_model
from fedprune.partition import Partition, partition
from fedprune.pruning import (
    Mask,
    Weights,
    apply_mask_,
    full_mask,
    measure_sparsity,
    prunable_names,
)
from fedprune.structured import expand_weights, slice_weights
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


def new_model(cfg: ExperimentConfig, data: ImageDataset | DataShape) -> nn.Module:
    return build_model(cfg.model, data.input_shape, data.num_classes, cfg.seed)


def load_data(cfg: ExperimentConfig) -> ImageDataset:
    """The experiment's data set, subsets applied, as every engine and pod loads it."""
    return load_dataset(cfg.data.dataset, None, cfg.data.train_subset, cfg.data.test_subset)


def partition_data(data: ImageDataset, cfg: ExperimentConfig) -> Partition:
    return partition(data.y_train.numpy(), cfg.data.num_clients, cfg.data.partition, cfg.seed)


def pruning_method(
    model: nn.Module, data: ImageDataset | DataShape, cfg: ExperimentConfig
) -> Method:
    """The configured pruning method; build it once per process (structured pruning traces
    the model's channel dependencies)."""
    return method_for(cfg, model, data.input_shape)


def init_global(
    model: nn.Module, method: Method, data: ImageDataset, shards: Partition, cfg: ExperimentConfig
) -> GlobalModel:
    """The seeded fresh model with a full mask, as the method wants to start (FedDST sparse
    from round 0, PruneFL after its initial prune on one client's data)."""
    weights = {name: t.detach().clone() for name, t in model.state_dict().items()}
    structured = cfg.pruning.method == "structured"  # a removed channel takes its bias along
    names = prunable_names(weights, cfg.pruning.include_bias_and_norm or structured)
    rows = torch.from_numpy(shards[cfg.pruning.prunefl.initial_client])
    trainer = initial_training(model, data, rows, cfg)
    weights, mask = method.start(weights, full_mask(weights, names), trainer)
    return GlobalModel(weights=weights, mask=mask)


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


def downloads(
    global_model: GlobalModel,
    payload: bytes,
    clients: list[int],
    held: dict[int, str],
    cfg: ExperimentConfig,
    personal: dict[int, Mask] | None = None,
) -> Downloads:
    """Who downloads what, given `payload` (the full broadcast), `held`, the `mask_id` each
    client last received (the caller's record of client state; after the round every sampled
    client holds `Downloads.mask_id`), and `personal`, the masks clients keep for themselves
    (LotteryFL): such a client downloads the values under its own mask."""
    current = mask_id(global_model.mask)
    reuse = cfg.compression.values_only_downloads and cfg.compression.encoding == "sparse"
    own = {c: personal[c] for c in clients if c in (personal or {})} if reuse else {}
    shared = [c for c in clients if c not in own]
    holders = sum(held.get(c) == current for c in shared) if reuse else 0
    values = (
        encode_values(global_model.weights, global_model.mask, cfg.compression, cfg.seed)
        if holders
        else None
    )
    mine = {
        c: encode_values(global_model.weights, mask, cfg.compression, cfg.seed)
        for c, mask in own.items()
    }
    return Downloads(payload, values, len(shared) - holders, holders, current, mine)


@dataclass(frozen=True)
class Personal:
    """A client's own state when its round starts (LotteryFL): the mask it kept from its last
    round, and what it downloaded (the global values under that mask; None when it got the
    whole broadcast)."""

    mask: Mask
    download: bytes | None = None

    def received(self, broadcast: Weights) -> Weights:
        """The global weights as this client has them."""
        return broadcast if self.download is None else decode(self.download, self.mask)[0]


def personal_starts(masks: dict[int, Mask], sent: Downloads) -> dict[int, Personal]:
    return {c: Personal(mask, sent.personal.get(c)) for c, mask in masks.items()}


def train_clients(
    model: nn.Module,
    method: Method,
    payload: bytes,
    data: ImageDataset,
    shards: Partition,
    clients: list[int],
    round_: int,
    cfg: ExperimentConfig,
    personal: dict[int, Personal] | None = None,
) -> list[ClientUpdate]:
    """Each client starts from the decoded broadcast and trains under its mask: one after
    another in the one shared `model` (or in the physically smaller model, for structured
    pruning), or all together with `client.vectorize`. The method may change a client's
    mask before training (LotteryFL's personal masks: `personal` holds the masks clients
    kept from earlier rounds and what they downloaded), during it (FedDST) or after it
    (client-side pruning) and may ask for importance (PruneFL); then the client encodes its
    model for upload."""
    weights, mask = decode(payload)
    personal = personal or {}
    generators = [
        torch.Generator().manual_seed(seed_for(cfg.seed, round_, client)) for client in clients
    ]
    shard_rows = [torch.from_numpy(shards[client]) for client in clients]
    train_rows, held_out = list(shard_rows), [torch.empty(0, dtype=torch.int64)] * len(clients)
    if method.personal:  # LotteryFL's clients hold out validation rows and train on the rest
        splits = [validation_split(r, c, cfg) for r, c in zip(shard_rows, clients, strict=True)]
        train_rows, held_out = [t for t, _ in splits], [v for _, v in splits]
    scores = [math.nan] * len(clients) if not method.personal else []
    if cfg.client.vectorize:
        trained, losses = train_together(
            model, weights, mask, data.x_train, data.y_train, shard_rows, generators, cfg.client
        )
        masks = [mask] * len(clients)
        importances: list[Weights | None] = [None] * len(clients)
    else:
        trained, losses, masks, importances = [], [], [], []
        learner = method.learner(weights, mask) if method.trains_shrunk else model
        start = slice_weights(weights, mask) if learner is not model else weights
        learn_mask = {} if learner is not model else mask
        for index, (client, generator) in enumerate(zip(clients, generators, strict=True)):
            rows = train_rows[index]
            if method.personal:
                own = personal.get(client, Personal(mask))
                start, learn_mask = method.client_start(
                    own.received(weights), own.mask, round_,
                    lambda w, v=held_out[index]: accuracy_on(model, w, data, v, cfg),
                )  # fmt: skip
            learner.load_state_dict(start)
            x, y = data.x_train[rows], data.y_train[rows]
            steps = cfg.client.epochs * math.ceil(len(rows) / cfg.client.batch_size)
            importance = (
                {name: torch.zeros_like(weights[name]) for name in mask}
                if method.wants_importance(round_)
                else None
            )
            loss, kept = local_train(
                learner, learn_mask, x, y, cfg.client, generator,
                method.regrowth(round_, steps), importance,
            )  # fmt: skip
            local = {name: t.detach().clone() for name, t in learner.state_dict().items()}
            if learner is not model:
                local, kept = expand_weights(local, mask, weights), mask
            if method.personal:
                scores.append(personal_accuracy(model, shard_rows[index], data, cfg))
            losses.append(loss)
            trained.append(local)
            masks.append(kept)
            importances.append(importance)
    updates = []
    for client, rows, local, kept, importance, loss, score in zip(
        clients, train_rows, trained, masks, importances, losses, scores, strict=True
    ):
        kept = method.client_mask(local, kept, round_)
        apply_mask_(local, kept)
        upload = encode(local, kept, cfg.compression, seed_for(cfg.seed, round_, client))
        extra = save_tensors({n: t.half() for n, t in importance.items()}) if importance else b""
        updates.append(ClientUpdate(client, len(rows), upload, loss, extra, score))
    return updates


def validation_split(
    rows: torch.Tensor, client: int, cfg: ExperimentConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """A client's training rows and its held-out validation rows (`lottery.validation_share`,
    at least one), the same every round."""
    order = torch.randperm(
        len(rows), generator=torch.Generator().manual_seed(seed_for(cfg.seed, client))
    )
    held = max(1, round(cfg.pruning.lottery.validation_share * len(rows)))
    return rows[order[held:]], rows[order[:held]]


def accuracy_on(
    model: nn.Module,
    weights: Weights,
    data: ImageDataset,
    rows: torch.Tensor,
    cfg: ExperimentConfig,
) -> float:
    """Accuracy of `weights` on training rows `rows` (a client's validation rows)."""
    model.load_state_dict(weights)
    x, y = data.x_train[rows], data.y_train[rows]
    return evaluate_model(model, x, y, cfg.eval.batch_size).accuracy


def personal_accuracy(
    model: nn.Module, rows: torch.Tensor, data: ImageDataset, cfg: ExperimentConfig
) -> float:
    """Test accuracy of a client's model on the client's own label mix (LotteryFL tests each
    client on local test data drawn like its training data)."""
    per_class = evaluate_model(model, data.x_test, data.y_test, cfg.eval.batch_size).per_class
    return mix_accuracy(per_class, data.y_train[rows])


def mix_accuracy(per_class: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy on a label mix: the per-class test accuracies weighted by each class's share
    of `labels` (a class the test set lacks cannot be scored and is left out)."""
    mix = torch.bincount(labels, minlength=len(per_class)).double()[: len(per_class)]
    tested = ~per_class.isnan()
    return float((per_class[tested] * mix[tested]).sum() / mix[tested].sum())


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


def mean_importance(updates: list[ClientUpdate]) -> Weights | None:
    """The sample-weighted mean of the clients' importance, or None if none was sent."""
    sent = [u for u in sorted(updates, key=lambda u: u.client) if u.importance]
    if not sent:
        return None
    total = sum(u.num_samples for u in sent)
    mean: Weights = {}
    for update in sent:
        for name, value in load_tensors(update.importance).items():
            share = value.float() * (update.num_samples / total)
            mean[name] = mean[name] + share if name in mean else share
    return mean


def server_prune(
    global_model: GlobalModel,
    updates: list[ClientUpdate],
    method: Method,
    round_: int,
    payload: bytes,
) -> GlobalModel:
    """The method's next global mask (and weights) from the aggregate and the round's
    broadcast `payload`: magnitude pruning to the schedule's target, a structured mask,
    FedDST's consensus, PruneFL's importance ranking, the lottery ticket's rewind, or the
    union of LotteryFL's personal masks."""
    inputs = RoundInputs(payload, mean_importance(updates))
    weights, mask = method.server(global_model.weights, global_model.mask, round_, inputs)
    return GlobalModel(weights=weights, mask=mask)


def evaluate(
    method: Method, global_model: GlobalModel, data: ImageDataset, cfg: ExperimentConfig
) -> Evaluation:
    """Test accuracy and loss of the global model, as it runs (physically pruned, for
    structured pruning)."""
    served = method.served(global_model.weights, global_model.mask)
    return evaluate_model(served, data.x_test, data.y_test, cfg.eval.batch_size)


def is_test_round(round_: int, cfg: ExperimentConfig) -> bool:
    return round_ % cfg.eval.every == 0 or round_ == cfg.rounds


def round_metrics(
    round_: int,
    global_model: GlobalModel,
    method: Method,
    data: ImageDataset,
    updates: list[ClientUpdate],
    sent: Downloads,
    seconds: float,
    cfg: ExperimentConfig,
) -> RoundMetrics:
    """Evaluate the new global model (on test rounds) and add what the round cost in bytes
    and seconds."""
    untested = Evaluation(accuracy=math.nan, loss=math.nan)
    result = evaluate(method, global_model, data, cfg) if is_test_round(round_, cfg) else untested
    report = measure_sparsity(global_model.weights, global_model.mask)
    samples = sum(u.num_samples for u in updates)
    bytes_up = sum(u.bytes_up for u in updates)
    importance_up = sum(len(u.importance) for u in updates)
    floor_up = sum(floor_bits(u.payload) for u in updates) / 8
    bytes_down = sent.bytes
    floor_down = sent.floor_bytes
    personal = {}
    if method.personal:
        kept = [measure_sparsity(*decode(u.payload)).sparsity for u in updates]
        personal = {
            "personal_accuracy": sum(u.personal_accuracy * u.num_samples for u in updates)
            / samples,
            "personal_sparsity": float(np.mean(kept)),
        }
    return RoundMetrics(
        round=round_,
        test_accuracy=result.accuracy,
        test_loss=result.loss,
        train_loss=sum(u.train_loss * u.num_samples for u in updates) / samples,
        sparsity=report.sparsity,
        target_sparsity=method.target(round_),
        nonzero_params=report.nonzero,
        total_params=report.total,
        bytes_up=bytes_up,
        bytes_down=bytes_down,
        seconds=seconds,
        layer_sparsity=report.per_layer,
        floor_bytes_up=floor_up,
        floor_bytes_down=floor_down,
        floor_ratio_up=(bytes_up - importance_up) / floor_up if floor_up else math.nan,
        floor_ratio_down=bytes_down / floor_down if floor_down else math.nan,
        values_only_downloads=sent.values_only,
        importance_bytes_up=importance_up,
        **personal,
    )
