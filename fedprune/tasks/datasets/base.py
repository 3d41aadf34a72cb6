"""The data-set registry: a data set knows its shape (input shape and output count, the one
source of both) and how to load itself as the federated data type, `FederatedData`. Its
settings are the `data` section: the common ones (`DataParams`: clients, partition, subsets)
and its own (a file data set's `path`, `label`, …). A user's own loader is named by import
path: `data: {dataset: package.module:callable, kwargs: {...}}`, called as
`callable(**kwargs)` and returning a `FederatedData`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol

import numpy as np
import torch
from pydantic import Field

from fedprune.errors import UserError
from fedprune.registry import ImportPath, Params, Registry
from fedprune.tasks.partitioners import PARTITIONERS


@dataclass(frozen=True)
class DataShape:
    """What a model needs to know about a data set; a pod that handles only models (the
    aggregator) builds one from this instead of loading the data."""

    input_shape: tuple[int, ...]
    num_classes: int
    """Classes (classification) or targets per sample (regression): the model's outputs."""


class DataError(UserError):
    """Missing, damaged or unusable data; the message names the file and what to do."""


@dataclass(frozen=True)
class FederatedData:
    """A data set as fedprune trains on it: features (N, *input_shape) float32 and labels
    (int64 class ids, or float32 targets for regression), a train and a test split; `shape`
    is the registered one (a subset need not show every class). A data set kept at sites
    names them (`sites`, in order) and gives each site's rows of the train split
    (`site_rows`): the natural partition (`partition: {kind: natural}`)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    shape: DataShape
    sites: tuple[str, ...] = ()
    site_rows: tuple[np.ndarray, ...] = ()
    site_tests: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    """Site → (x, y) of the sites that hold a test set of their own (per-site metrics)."""
    standardize: bool = False
    """Tabular features to standardise with federated statistics (`steps.features`)."""

    def digest(self) -> str:
        """A content hash of both splits, as MLflow's dataset digest: a recurring run shows
        whether it saw the same data."""
        hasher = hashlib.blake2b(digest_size=8)
        for tensor in (self.x_train, self.y_train, self.x_test, self.y_test):
            hasher.update(str((tuple(tensor.shape), tensor.dtype)).encode())
            hasher.update(memoryview(tensor.contiguous().numpy()))
        return hasher.hexdigest()

    @property
    def num_classes(self) -> int:
        return self.shape.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.shape.input_shape


class DataParams(Params):
    """The settings every data set has (the `data` section, beside the data set's own)."""

    num_clients: Annotated[int, Field(ge=1)] = 10
    partition: PARTITIONERS.section() = PARTITIONERS.defaults()  # type: ignore[valid-type]
    """How the training set is split across clients (all seeded); `natural`: one client per
    site of a data set kept at sites."""
    train_subset: Annotated[int, Field(ge=1)] | None = None
    """Use only the first N training samples (tests, quick looks)."""
    test_subset: Annotated[int, Field(ge=1)] | None = None


class ImportedData(DataParams):
    """A loader of the user's: `dataset` is `package.module:callable`, `kwargs` its arguments;
    it returns a `FederatedData`."""

    dataset: ImportPath
    kwargs: dict[str, Any] = Field(default_factory=dict)


class DataSource(Protocol):
    """`task` is the task's kind: it says how labels are read (class ids or targets)."""

    def load(self, params: Any, task: str) -> FederatedData:
        """Train and test splits as the settings `params` say (subsets applied)."""
        ...

    def data_shape(self, params: Any, task: str) -> DataShape:
        """Input shape and output count (reading as little as the source can)."""
        ...


DATASETS: Registry[DataSource] = Registry(
    "dataset", tag="dataset", default="mnist", base=DataParams, imported=ImportedData
)


def data_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fedprune" / "data"
    return Path(os.environ.get("FEDPRUNE_DATA", default))
