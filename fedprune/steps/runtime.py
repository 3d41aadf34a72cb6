"""What a process needs to run the FL steps, built once per process (the local engine, a
worker, a Kubeflow pod): the config, the data and its split, the model clients train in and
the pruning method. Steps take it as their first argument instead of eight loose ones."""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedprune.config import ExperimentConfig
from fedprune.privacy.accounting import Composition, allowed_rounds, round_costs, unreachable
from fedprune.privacy.config import PrivacyError
from fedprune.pruning.masks import Mask, Weights, full_mask, prunable_names
from fedprune.pruning.methods import METHODS, Method, MethodContext
from fedprune.records import GlobalModel, seed_for
from fedprune.steps.features import Standardization, standardize, standardized
from fedprune.steps.remote_data import localize
from fedprune.steps.sites import Federation, load_view, view_of
from fedprune.tasks.datasets import DataError, DataShape, FederatedData, data_shape
from fedprune.tasks.datasets import load_data as load_dataset
from fedprune.tasks.models import ModelError, build_model
from fedprune.tasks.objectives import Task, build_task
from fedprune.tasks.partitioners import Partition, Sites, partition
from fedprune.training.local import local_train


@dataclass
class Runtime:
    cfg: ExperimentConfig
    shape: DataShape
    model: nn.Module
    """The model clients train in (one per process, reused by every client)."""
    method: Method
    task: Task
    data: FederatedData | None = None
    """None in pods that handle only models (aggregate, finalise)."""
    shards: Partition | None = None
    standardization: Standardization | None = None
    """The features' federated statistics, for data sets that standardise (tabular)."""
    held_rows: tuple[int, ...] | None = None
    """How many training rows each client holds: the most samples it can claim."""

    def privacy_costs(self) -> list[Composition]:
        """What one round costs in privacy: one composition for central DP, one per shard
        size for local DP (`fedprune.privacy.accounting.round_costs`)."""
        assert self.cfg.privacy.mechanism == "central" or self.held_rows is not None
        return round_costs(self.cfg, self.held_rows or ())

    def rounds_allowed(self, rounds_before: int = 0) -> int:
        """Of this run's rounds, those `privacy.target_epsilon` allows: the model's earlier
        rounds (`rounds_before`, a warm start) spent part of the budget too. All of them
        without a target."""
        privacy, rounds = self.cfg.privacy, self.cfg.rounds
        if privacy.target_epsilon is None:
            return rounds
        within = allowed_rounds(privacy, self.privacy_costs(), rounds=rounds_before + rounds)
        return max(0, within - rounds_before)

    @classmethod
    def build(
        cls,
        cfg: ExperimentConfig,
        *,
        data: FederatedData | None = None,
        shards: Partition | None = None,
        with_data: bool = True,
        federation: Federation | None = None,
        site: str | None = None,
    ) -> Runtime:
        """Load the data (unless given, or `with_data` is False), split it (unless `shards`
        is given) and standardise it if it asks (federated statistics), build the seeded
        model and the method (structured pruning traces the model's channel dependencies
        here, once). Labels and the model's outputs are checked against the task here, before
        any round. With a `federation` (data kept at sites, `kubeflow.sites`) a pod reads
        only what its place holds: `site`'s folder, or (no site) the server's test set."""
        if federation is not None:
            return cls._placed(cfg, federation, site, with_data)
        if with_data and data is None:
            data = load_data(cfg)
        if data is not None and shards is None:
            shards = partition_data(data, cfg)
        standardization = None
        if data is not None and data.standardize:
            assert shards is not None
            data, standardization = standardize(data, shards)
        if data is not None:
            shape = data.shape
        else:
            shape = data_shape(localize(cfg.data, cfg.s3)[0], cfg.task.kind)
        held = None if shards is None else tuple(len(s) for s in shards)
        return cls._assemble(cfg, shape, data, shards, standardization, held)

    @classmethod
    def _placed(
        cls, cfg: ExperimentConfig, federation: Federation, site: str | None, with_data: bool
    ) -> Runtime:
        """A pod's runtime at one place: its own rows (one site's, as the client of that
        site; none for the server), the federation's shape and statistics."""
        data, shards, stats = None, None, federation.standardization
        if with_data:
            data = dataclasses.replace(load_view(cfg, view_of(cfg, site)), shape=federation.shape)
            if stats is not None:
                data = standardized(data, stats)
            if site is not None:
                rows = np.arange(len(data.x_train))
                shards = [rows if s == site else rows[:0] for s in federation.sites]
        return cls._assemble(cfg, federation.shape, data, shards, stats, federation.rows)

    @classmethod
    def _assemble(
        cls,
        cfg: ExperimentConfig,
        shape: DataShape,
        data: FederatedData | None,
        shards: Partition | None,
        standardization: Standardization | None,
        held_rows: tuple[int, ...] | None,
    ) -> Runtime:
        model = build_model(cfg.model, shape.input_shape, shape.num_classes, seed=cfg.seed)
        task = build_task(cfg.task)
        check_outputs(model, shape, cfg)
        if data is not None:
            check_labels(data, task)
        ctx = MethodContext(model=model, input_shape=shape.input_shape, rounds=cfg.rounds)
        method = METHODS.get(cfg.pruning.method)(cfg.pruning, ctx)
        rt = cls(cfg, shape, model, method, task, data, shards, standardization, held_rows)
        rt.check_privacy()
        return rt

    def check_privacy(self) -> None:
        """What the privacy settings need of the model and the split, before any round: a
        model Opacus can train (local DP), a first round within `privacy.target_epsilon`."""
        privacy = self.cfg.privacy
        if privacy.mechanism == "local":
            from fedprune.training.private import check_private_model  # imports Opacus

            try:
                check_private_model(self.model)
            except ValueError as error:
                raise ModelError(f"model.name: {self.cfg.model.name}: {error}") from None
        if privacy.target_epsilon is None or self.held_rows is None:
            return
        if problem := unreachable(privacy, self.privacy_costs()):
            raise PrivacyError(problem)

    def data_artifacts(self) -> dict[str, bytes]:
        """What serving the model needs of the data: the features' statistics, if any."""
        if self.standardization is None:
            return {}
        return {"standardization.json": self.standardization.to_json()}

    def rows(self, client: int) -> torch.Tensor:
        """The training rows of one client."""
        assert self.shards is not None, "this process has no partition"
        return torch.from_numpy(self.shards[client])


def load_data(cfg: ExperimentConfig) -> FederatedData:
    """The experiment's data set, subsets applied, as every engine and pod loads it (from a
    local copy when it is in S3)."""
    return load_dataset(localize(cfg.data, cfg.s3)[0], cfg.task.kind)


def partition_data(data: FederatedData, cfg: ExperimentConfig) -> Partition:
    labels = data.y_train.numpy() if data.y_train.dim() == 1 else np.zeros(len(data.y_train))
    sites = Sites(data.sites, data.site_rows) if data.sites else None
    return partition(labels, cfg.data.num_clients, cfg.data.partition, seed=cfg.seed, sites=sites)


def check_labels(data: FederatedData, task: Task) -> None:
    sites = [(f"site {site}'s test", y) for site, (_, y) in data.site_tests.items()]
    for split, labels in (("train", data.y_train), ("test", data.y_test), *sites):
        problem = task.check_labels(labels, data.num_classes)
        if problem:
            raise DataError(f"data ({data.name}, {split} split): {problem}")


def check_outputs(model: nn.Module, shape: DataShape, cfg: ExperimentConfig) -> None:
    """The model's output for a batch of two must be (2, outputs) for the task."""
    probe = torch.zeros(2, *shape.input_shape)
    try:
        with torch.no_grad():
            outputs = model.eval()(probe)
    except Exception as error:  # a user's model failing on the data's shape, for any reason
        raise ModelError(
            f"model.name: {cfg.model.name} fails on a batch of shape {tuple(probe.shape)} "
            f"(the data's input shape): {type(error).__name__}: {error}"
        ) from None
    wanted = (2, shape.num_classes)
    if not isinstance(outputs, torch.Tensor) or tuple(outputs.shape) != wanted:
        got = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        what = "classes" if cfg.task.kind == "classification" else "targets"
        raise ModelError(
            f"model.name: {cfg.model.name} returns {got} for a batch of 2, but task "
            f"{cfg.task.kind} with {shape.num_classes} {what} needs {wanted}"
        )


def init_global(rt: Runtime, start: Weights | None = None) -> GlobalModel:
    """The seeded fresh model (or `start`, pretrained weights) with a full mask, as the method
    wants to start (FedDST sparse from round 0, PruneFL after its initial prune on one
    client's data)."""
    fresh = rt.model.state_dict() if start is None else start
    weights = {name: t.detach().clone() for name, t in fresh.items()}
    biases = rt.cfg.pruning.include_bias_and_norm or rt.method.prunes_biases
    names = prunable_names(weights, biases, statistics=rt.method.prunes_biases)

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
    """The round's clients: a fixed number drawn without replacement, or with
    `sampling.poisson` each client with probability `fraction`. Seeded by (seed, round), so a
    resumed or warm-started run draws as an uninterrupted one; under central DP from the
    OS's randomness instead, since privacy amplification by sampling holds only while the
    sample is secret, and the config's seed is not."""
    private = cfg.privacy.mechanism == "central"
    rng = np.random.default_rng(secrets.randbits(128) if private else seed_for(cfg.seed, round_))
    if cfg.sampling.poisson:
        chosen = np.flatnonzero(rng.random(cfg.data.num_clients) < cfg.sampling.fraction)
    else:
        chosen = rng.choice(cfg.data.num_clients, size=cfg.clients_per_round(), replace=False)
    return sorted(int(c) for c in chosen)
