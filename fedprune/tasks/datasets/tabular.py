"""Tabular data sets in CSV or Parquet files (`dataset: csv` / `dataset: parquet`), one row a
sample: the `label` column is the label and every other column a numeric feature. Features are
standardised with federated statistics by default (`standardize`). Classification labels are
integers 0…C-1, or text listed in `classes` (its order gives the ids); regression targets are
numbers. Empty or NaN cells, text features and sites whose columns differ are errors that name
the file and the column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedprune.tasks.datasets.base import DATASETS, DataError, DataParams
from fedprune.tasks.datasets.files import FileSource, Table
from fedprune.uris import Uri


class TabularParams(DataParams):
    path: Uri
    """A folder: train.<ext> and test.<ext>, or clients/<site>/train.<ext> and test.<ext>."""
    label: str
    """The label column."""
    classes: list[str] | None = None
    """Classification labels written as text: the classes, in the order of their ids."""
    standardize: bool = True
    """Standardise features with the clients' federated statistics (`steps.features`)."""


class TabularSource(FileSource):
    def __init__(self, ext: str):
        self.ext = ext

    def _frame(self, file: Path):
        import pandas as pd

        try:
            return pd.read_csv(file) if self.ext == "csv" else pd.read_parquet(file)
        except Exception as error:  # unreadable, truncated, not this format
            raise DataError(f"data.path: cannot read {file}: {error}") from None

    def read(self, file: Path, params: TabularParams, task: str, split: str) -> Table:
        from pandas.api.types import is_numeric_dtype  # pandas loads only for tabular data

        frame = self._frame(file)
        if params.label not in frame.columns:
            listed = ", ".join(map(str, frame.columns[:20]))
            raise DataError(f"data.label: no column '{params.label}' in {file} (columns: {listed})")
        features = tuple(str(c) for c in frame.columns if c != params.label)
        if not features:
            raise DataError(f"data.path: {file} has no feature column beside '{params.label}'")
        for column in frame.columns:
            empty = frame[column].isna()
            if empty.any():
                raise DataError(
                    f"data.path: {file} has empty or NaN cells in column '{column}' "
                    f"(first at data row {int(np.argmax(empty.to_numpy())) + 1})"
                )
        for column in features:
            if not is_numeric_dtype(frame[column]):
                raise DataError(
                    f"data.path: column '{column}' of {file} is not numeric (e.g. "
                    f"{frame[column].iloc[0]!r}): encode it as numbers or drop it"
                )
        x = np.array(frame[list(features)].to_numpy(np.float32), order="C")  # writable, row-major
        y = torch.from_numpy(self._labels(frame[params.label], file, params, task))
        return Table(x, y, features)

    @staticmethod
    def _labels(column, file: Path, params: TabularParams, task: str) -> np.ndarray:
        from pandas.api.types import is_numeric_dtype

        if task == "regression":
            if not is_numeric_dtype(column):
                raise DataError(f"data.label: column '{params.label}' of {file} is not numeric")
            return column.to_numpy(np.float32)
        if params.classes is not None:
            ids = {name: k for k, name in enumerate(params.classes)}
            unknown = sorted({str(v) for v in column} - ids.keys())
            if unknown:
                raise DataError(
                    f"data.label: {file} has labels {unknown[:5]} not in data.classes "
                    f"{params.classes}"
                )
            return np.array([ids[str(v)] for v in column], dtype=np.int64)
        values = column.to_numpy()
        if not is_numeric_dtype(column) or not np.all(np.mod(values, 1) == 0):
            raise DataError(
                f"data.label: labels in column '{params.label}' of {file} are not integer "
                f"class ids (e.g. {values[0]!r}): list the classes in data.classes"
            )
        return values.astype(np.int64)


for _ext in ("csv", "parquet"):
    DATASETS.register(_ext, TabularParams)(TabularSource(_ext))
