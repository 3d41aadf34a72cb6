"""Arrays in NumPy `.npz` files (`dataset: npz`): `path` is one file holding `x_train`,
`y_train`, `x_test` and `y_test`, or a folder in the file layout (`files.py`) whose train.npz
files hold `x_train`, `y_train` and whose test.npz holds `x_test`, `y_test`. Features are
used as they are (N, *input_shape); labels are class ids, or targets for regression."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedprune.tasks.datasets.base import DATASETS, DataError, DataParams, DataShape, FederatedData
from fedprune.tasks.datasets.files import find_layout


class NpzParams(DataParams):
    path: str
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


class NpzSource:
    def load(self, params: NpzParams, task: str) -> FederatedData:
        path = Path(params.path)
        if path.is_file():
            parts = [("", path)]
            test = path
            sites: tuple[str, ...] = ()
            own: tuple[tuple[str, Path], ...] = ()
        else:
            layout = find_layout(params.path, "npz")
            parts, test, sites = list(layout.train), layout.test, layout.sites
            own = layout.site_tests
        xs, ys, rows, start = [], [], [], 0
        for _, file in parts:
            x, y = _arrays(file, ("x_train", "y_train"))
            xs.append(x.astype(np.float32))
            ys.append(_labels(y, file, task))
            rows.append(np.arange(start, start + len(x)))
            start += len(x)
        x_test, y_test = _arrays(test, ("x_test", "y_test"))
        x_train, y_train = torch.from_numpy(np.concatenate(xs)), torch.cat(ys)
        site_tests = {}
        for site, file in own:
            x, y = _arrays(file, ("x_test", "y_test"))
            site_tests[site] = (torch.from_numpy(x.astype(np.float32)), _labels(y, file, task))
        labels = [y_train, _labels(y_test, test, task), *(y for _, y in site_tests.values())]
        if task == "regression":
            outputs = 1 if y_train.dim() == 1 else int(np.prod(y_train.shape[1:]))
        else:
            outputs = max(int(y.max()) for y in labels if len(y)) + 1
        train, kept = slice(params.train_subset), len(x_train[slice(params.train_subset)])
        return FederatedData(
            name=f"npz:{params.path}",
            x_train=x_train[train],
            y_train=y_train[train],
            x_test=torch.from_numpy(x_test.astype(np.float32))[: params.test_subset],
            y_test=labels[1][: params.test_subset],
            shape=DataShape(tuple(x_train.shape[1:]), outputs),
            sites=sites,
            site_rows=tuple(r[r < kept] for r in rows) if sites else (),
            site_tests=site_tests,
        )

    def data_shape(self, params: NpzParams, task: str) -> DataShape:
        return self.load(params, task).shape


DATASETS.register("npz", NpzParams)(NpzSource())
