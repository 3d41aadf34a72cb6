"""What a process needs to run the FL steps, built once per process (the local engine, a
worker, a Kubeflow pod): the config, the data and its split, the model clients train in and
the pruning method. Steps take it as their first argument instead of eight loose ones."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedprune.config import ExperimentConfig
from fedprune.pruning.masks import Mask, Weights, full_mask, prunable_names
from fedprune.pruning.methods import METHODS, Method, MethodContext
from fedprune.records import GlobalModel, seed_for
from fedprune.tasks.datasets import DataShape, ImageDataset, data_shape, load_dataset
from fedprune.tasks.models import build_model
from fedprune.tasks.objectives import Task, build_task
from fedprune.tasks.partitioners import Partition, partition
from fedprune.training.local import local_train


@dataclass
class Runtime:
    cfg: ExperimentConfig
    shape: DataShape
    model: nn.Module
    """The model clients train in (one per process, reused by every client)."""
    method: Method
    task: Task
    data: ImageDataset | None = None
    """None in pods that handle only models (aggregate, finalise)."""
    shards: Partition | None = None

    @classmethod
    def build(
        cls,
        cfg: ExperimentConfig,
        *,
        data: ImageDataset | None = None,
        shards: Partition | None = None,
        with_data: bool = True,
    ) -> Runtime:
        """Load the data (unless given, or `with_data` is False), split it (unless `shards`
        is given), build the seeded model and the method (structured pruning traces the
        model's channel dependencies here, once)."""
        if with_data and data is None:
            data = load_data(cfg)
        if data is not None and shards is None:
            shards = partition_data(data, cfg)
        shape = data.shape if data is not None else data_shape(cfg.data.dataset)
        model = build_model(cfg.model, shape.input_shape, shape.num_classes, seed=cfg.seed)
        ctx = MethodContext(model=model, input_shape=shape.input_shape, rounds=cfg.rounds)
        method = METHODS.get(cfg.pruning.method)(cfg.pruning, ctx)
        return cls(cfg, shape, model, method, build_task(cfg.task), data, shards)

    def rows(self, client: int) -> torch.Tensor:
        """The training rows of one client."""
        assert self.shards is not None, "this process has no partition"
        return torch.from_numpy(self.shards[client])


def load_data(cfg: ExperimentConfig) -> ImageDataset:
    """The experiment's data set, subsets applied, as every engine and pod loads it."""
    data = cfg.data
    return load_dataset(data.dataset, train_subset=data.train_subset, test_subset=data.test_subset)


def partition_data(data: ImageDataset, cfg: ExperimentConfig) -> Partition:
    labels = data.y_train.numpy()
    return partition(labels, cfg.data.num_clients, cfg.data.partition, seed=cfg.seed)


def init_global(rt: Runtime) -> GlobalModel:
    """The seeded fresh model with a full mask, as the method wants to start (FedDST sparse
    from round 0, PruneFL after its initial prune on one client's data)."""
    weights = {name: t.detach().clone() for name, t in rt.model.state_dict().items()}
    biases = rt.cfg.pruning.include_bias_and_norm or rt.method.prunes_biases
    names = prunable_names(weights, biases)

    def train(client: int, start: Weights, mask: Mask, *, epochs: int) -> Weights:
        assert rt.data is not None
        rows = rt.rows(client)
        rt.model.load_state_dict(start)
        generator = torch.Generator().manual_seed(rt.cfg.seed)
        settings = rt.cfg.client.model_copy(update={"epochs": epochs})
        x, y = rt.data.x_train[rows], rt.data.y_train[rows]
        local_train(rt.model, mask, x=x, y=y, cfg=settings, generator=generator, task=rt.task)
        return {name: t.detach().clone() for name, t in rt.model.state_dict().items()}

    weights, mask = rt.method.start(weights, full_mask(weights, names), train)
    return GlobalModel(weights=weights, mask=mask)


def sample_clients(cfg: ExperimentConfig, round_: int) -> list[int]:
    rng = np.random.default_rng(seed_for(cfg.seed, round_))
    chosen = rng.choice(cfg.data.num_clients, size=cfg.clients_per_round(), replace=False)
    return sorted(int(c) for c in chosen)
