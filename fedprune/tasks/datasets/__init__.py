"""Data sets, one file each, registered by name (`data.dataset`), or the user's loader by
import path."""

from fedprune.registry import call_imported, import_entries, is_import_path
from fedprune.tasks.datasets.base import (
    DATASETS,
    DataError,
    DataParams,
    DataShape,
    FederatedData,
    ImportedData,
    data_dir,
)
from fedprune.tasks.datasets.fetching import fetch, fetchable
from fedprune.tasks.datasets.files import EVERYTHING, FileSource, View
from fedprune.tasks.datasets.idx import load_dataset, read_idx


def load_data(params: DataParams, task: str, view: View = EVERYTHING) -> FederatedData:
    """The data set the `data` section `params` configures for a task of kind `task`, as
    every engine and pod loads it; `view`: only what one place holds (file data sets)."""
    name: str = params.dataset  # type: ignore[attr-defined]
    if not view.everything:
        source = DATASETS.get(name)
        assert isinstance(source, FileSource), "the config admits only file data sets at sites"
        return source.load(params, task, view)
    if not is_import_path(name):
        return DATASETS.get(name).load(params, task)
    assert isinstance(params, ImportedData)
    what = "a fedprune.tasks.datasets.FederatedData"
    return call_imported(name, "data.dataset", FederatedData, what, **params.kwargs)


def data_shape(params: DataParams, task: str) -> DataShape:
    """The data set's input shape and output count, without loading it where it can."""
    name: str = params.dataset  # type: ignore[attr-defined]
    if is_import_path(name):
        return load_data(params, task).shape
    return DATASETS.get(name).data_shape(params, task)


__all__ = [
    "DATASETS",
    "DataError",
    "DataParams",
    "DataShape",
    "FederatedData",
    "FileSource",
    "ImportedData",
    "View",
    "data_dir",
    "data_shape",
    "fetch",
    "fetchable",
    "load_data",
    "load_dataset",
    "read_idx",
]

import_entries(__name__, __path__)  # every module here registers one entry
