"""Data sets, one file each, registered by name (`data.dataset`)."""

from fedprune.registry import import_entries
from fedprune.tasks.datasets.base import (
    DATASETS,
    DataError,
    DataShape,
    ImageDataset,
    data_dir,
    data_shape,
    fetch,
    load_dataset,
)
from fedprune.tasks.datasets.idx import read_idx

__all__ = [
    "DATASETS",
    "DataError",
    "DataShape",
    "ImageDataset",
    "data_dir",
    "data_shape",
    "fetch",
    "load_dataset",
    "read_idx",
]

import_entries(__name__, __path__)  # every module here registers one entry
