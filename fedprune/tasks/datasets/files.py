"""File data sets (csv, parquet, npz): where their splits are and how they are stacked into
one `FederatedData`. Two layouts under a data set's `path`:

    <path>/train.<ext>   <path>/test.<ext>                   one training set, split by
                                                             `data.partition`
    <path>/clients/<site>/train.<ext>   <path>/test.<ext>    kept at sites: one folder per
                                                             site (`partition: natural`)

The server's test set is `<path>/test.<ext>` in both; a site may also hold its own,
`<path>/clients/<site>/test.<ext>` (per-site metrics).

A process that runs at one place reads only what that place holds (`View`): a site's pods
read their site's folder (`train.<ext>`, and `test.<ext>` when the site has one), the
server's pods only `<path>/test.<ext>`; one machine (the local engine) reads everything."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedprune.tasks.datasets.base import DataError, DataParams, DataShape, FederatedData
from fedprune.uris import Uri


@dataclass(frozen=True)
class View:
    """What one process reads of a data set kept at sites: everything (the default), one
    site's folder (`site`, at `path`: its own S3 prefix or volume), or the server's test set
    only (`server`)."""

    site: str | None = None
    path: Uri | None = None
    server: bool = False

    @property
    def everything(self) -> bool:
        return self.site is None and not self.server


EVERYTHING = View()


@dataclass(frozen=True)
class Layout:
    train: tuple[tuple[str, Path], ...]
    """(site, file) in site-name order; one ("", file) without sites; none for the server."""
    test: Path | None
    """The server's test set (None in a site's view)."""
    site_tests: tuple[tuple[str, Path], ...] = ()
    """(site, file) for the sites that hold a test set of their own."""

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(site for site, _ in self.train if site)


def find_layout(path: str, ext: str, view: View = EVERYTHING) -> Layout:
    if view.site is not None:
        return _site_layout(Path(view.path or Path(path) / "clients" / view.site), view.site, ext)
    root = Path(path).expanduser()
    if not root.is_dir():
        from fedprune.tasks.datasets.bundled import TABLES

        hint = f"; fetch it with: fedprune data fetch {root.name}" if root.name in TABLES else ""
        raise DataError(
            f"data.path: {root} is not a folder (expected train.{ext} and test.{ext}, or "
            f"clients/<site>/train.{ext}){hint}"
        )
    test = root / f"test.{ext}"
    if not test.is_file():
        raise DataError(f"data.path: {test} is missing (the server's test set)")
    if view.server:
        return Layout((), test)
    clients = root / "clients"
    if clients.is_dir():
        folders = sorted(p for p in clients.iterdir() if p.is_dir())
        if not folders:
            raise DataError(f"data.path: {clients} has no site folders")
        sites = [_site_layout(folder, folder.name, ext) for folder in folders]
        train = tuple(pair for site in sites for pair in site.train)
        return Layout(train, test, tuple(pair for site in sites for pair in site.site_tests))
    single = root / f"train.{ext}"
    if not single.is_file():
        raise DataError(f"data.path: {root} has neither train.{ext} nor clients/<site>/train.{ext}")
    return Layout((("", single),), test)


def _site_layout(folder: Path, site: str, ext: str) -> Layout:
    file = folder / f"train.{ext}"
    if not file.is_file():
        raise DataError(f"data.path: site folder {folder} has no train.{ext}")
    own = folder / f"test.{ext}"
    return Layout(((site, file),), None, ((site, own),) if own.is_file() else ())


@dataclass(frozen=True)
class Table:
    """One file's samples: features (N, …) float32, labels, and what must match across files
    (tabular: the feature columns; arrays: the sample shape)."""

    x: np.ndarray
    y: torch.Tensor
    features: tuple


class FileSource:
    """A data set in train/test files of one format: subclasses read one file (`read`), this
    stacks the sites' files, keeps row ranges per site, applies subsets and finds the shape."""

    ext: str

    def read(self, file: Path, params, task: str, split: str) -> Table:
        """`split` is "train" or "test" (npz files name their arrays by split)."""
        raise NotImplementedError

    def layout(self, params, view: View) -> Layout:
        return find_layout(params.path, self.ext, view)

    def load(self, params, task: str, view: View = EVERYTHING) -> FederatedData:
        layout = self.layout(params, view)
        first: tuple[Path, tuple] | None = None

        def read(file: Path, split: str) -> Table:
            nonlocal first
            table = self.read(file, params, task, split)
            if first is None:
                first = (file, table.features)
            elif table.features != first[1]:
                raise DataError(
                    f"data.path: {file} has features {list(table.features)}, not those of "
                    f"{first[0]}, {list(first[1])}"
                )
            return table

        parts = [read(file, "train") for _, file in layout.train]
        test = read(layout.test, "test") if layout.test else None
        own = {site: read(file, "test") for site, file in layout.site_tests}
        tables = [*parts, *([test] if test else []), *own.values()]
        x_train, y_train = _stack(parts, tables[0])
        bounds = np.cumsum([0, *(len(p.x) for p in parts)])
        kept = len(x_train[: params.train_subset])
        rows = [np.arange(a, min(b, kept)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        x_test, y_test = _stack([test] if test else [], tables[0])
        return FederatedData(
            name=f"{self.ext}:{params.path}",
            x_train=x_train[: params.train_subset],
            y_train=y_train[: params.train_subset],
            x_test=x_test[: params.test_subset],
            y_test=y_test[: params.test_subset],
            shape=DataShape(tuple(tables[0].x.shape[1:]), outputs(tables, params, task)),
            sites=layout.sites,
            site_rows=tuple(rows) if layout.sites else (),
            site_tests={site: (torch.from_numpy(t.x), t.y) for site, t in own.items()},
            standardize=getattr(params, "standardize", False),
        )

    def data_shape(self, params: DataParams, task: str) -> DataShape:
        return self.load(params, task).shape


def _stack(tables: list[Table], like: Table) -> tuple[torch.Tensor, torch.Tensor]:
    """The tables' rows in order; none gives empty tensors shaped like `like`'s."""
    if not tables:
        return torch.zeros(0, *like.x.shape[1:]), like.y[:0]
    return torch.from_numpy(np.concatenate([t.x for t in tables])), torch.cat([t.y for t in tables])


def outputs(tables: list[Table], params, task: str) -> int:
    """The model's output count: targets per sample (regression), the listed classes, or the
    largest class id seen + 1."""
    if task == "regression":
        return math.prod(tables[0].y.shape[1:])
    classes = getattr(params, "classes", None)
    if classes is not None:
        return len(classes)
    return max(int(t.y.max()) for t in tables if len(t.y)) + 1
