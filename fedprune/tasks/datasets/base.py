"""The data-set registry: a data set knows its shape (input shape and class count, the one
source of both), how to load itself from the data folder, and how to fetch its files offline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from fedprune.errors import UserError
from fedprune.registry import Registry


@dataclass(frozen=True)
class DataShape:
    """What a model needs to know about a data set; a pod that handles only models (the
    aggregator) builds one from this instead of loading the data."""

    input_shape: tuple[int, ...]
    num_classes: int


class DataError(UserError):
    """Missing or damaged data files; the message says how to get them."""


@dataclass(frozen=True)
class ImageDataset:
    """Normalised images (N, C, H, W) float32 and integer labels, train and test; `shape`
    is the registered one (a subset need not show every class)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    shape: DataShape

    @property
    def num_classes(self) -> int:
        return self.shape.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.shape.input_shape


class DataSource(Protocol):
    shape: DataShape
    how: str
    """Where its files come from, for messages."""

    def load(
        self, folder: Path, *, train_subset: int | None, test_subset: int | None
    ) -> ImageDataset: ...

    def is_fetched(self, folder: Path) -> bool: ...

    def fetch(self, folder: Path) -> None: ...


DATASETS: Registry[DataSource] = Registry("dataset", tag="dataset", default="mnist")


def data_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fedprune" / "data"
    return Path(os.environ.get("FEDPRUNE_DATA", default))


def _source(name: str) -> DataSource:
    if name not in DATASETS.names():
        raise DataError(f"unknown dataset '{name}'; registered: {', '.join(DATASETS.names())}")
    return DATASETS.get(name)


def data_shape(name: str) -> DataShape:
    return _source(name).shape


def load_dataset(
    name: str,
    root: Path | None = None,
    *,
    train_subset: int | None = None,
    test_subset: int | None = None,
) -> ImageDataset:
    """The data set's train and test splits from `<root>/<name>/` (root: `data_dir()`)."""
    folder = (root or data_dir()) / name
    return _source(name).load(folder, train_subset=train_subset, test_subset=test_subset)


def fetch(name: str, root: Path | None = None) -> Path:
    """Obtain a data set's files into `<root>/<name>/` (nothing to do when they are there)."""
    source, target = _source(name), (root or data_dir()) / name
    if not source.is_fetched(target):
        source.fetch(target)
    return target
