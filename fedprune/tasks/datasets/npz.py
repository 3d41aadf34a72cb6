"""Arrays in NumPy `.npz` files (`dataset: npz`): `path` is one file holding `x_train`,
`y_train`, `x_test` and `y_test`, or a folder in the file layout (`files.py`) whose train.npz
files hold `x_train`, `y_train` and whose test.npz holds `x_test`, `y_test`. Features are
used as they are (N, *input_shape); labels are class ids, or targets for regression."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedprune.tasks.datasets.base import DATASETS, DataError, DataParams
from fedprune.tasks.datasets.files import FileSource, Layout, Table, View
from fedprune.uris import Uri


class NpzParams(DataParams):
    path: Uri
    """An .npz file with all four arrays, or a folder of train.npz / test.npz files."""


def _arrays(file: Path, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(file, allow_pickle=False) as held:
            missing = [n for n in names if n not in held.files]
            if missing:
                raise DataError(
                    f"data.path: {file} has no array {', '.join(missing)} (it holds: "
                    f"{', '.join(held.files) or 'nothing'})"
                )
            x, y = (held[n] for n in names)
    except (OSError, ValueError) as error:
        raise DataError(f"data.path: cannot read {file} as .npz: {error}") from None
    if len(x) != len(y):
        raise DataError(f"data.path: {file}: {names[0]} has {len(x)} rows, {names[1]} {len(y)}")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise DataError(f"data.path: {file}: {names[0]} must be finite numbers")
    return x, y


def _labels(y: np.ndarray, file: Path, task: str) -> torch.Tensor:
    if task == "regression":
        return torch.from_numpy(y.astype(np.float32))
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.number) or not np.all(np.mod(y, 1) == 0):
        raise DataError(f"data.path: {file}: classification labels must be integer class ids")
    return torch.from_numpy(y.astype(np.int64))


class NpzSource(FileSource):
    ext = "npz"

    def layout(self, params: NpzParams, view: View) -> Layout:
        path = Path(params.path)
        if path.is_file() and view.everything:  # one file with all four arrays
            return Layout((("", path),), path)
        return super().layout(params, view)

    def read(self, file: Path, params: NpzParams, task: str, split: str) -> Table:
        x, y = _arrays(file, (f"x_{split}", f"y_{split}"))
        return Table(x.astype(np.float32), _labels(y, file, task), x.shape[1:])


DATASETS.register("npz", NpzParams)(NpzSource())
