"""Where a file data set's splits are, in one of two layouts under its `path`:

    <path>/train.<ext>   <path>/test.<ext>                   one training set, split by
                                                             `data.partition`
    <path>/clients/<site>/train.<ext>   <path>/test.<ext>    kept at sites: one folder per
                                                             site (`partition: natural`)

The server's test set is `<path>/test.<ext>` in both; a site may also hold its own,
`<path>/clients/<site>/test.<ext>` (per-site metrics)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedprune.tasks.datasets.base import DataError


@dataclass(frozen=True)
class Layout:
    train: tuple[tuple[str, Path], ...]
    """(site, file) in site-name order; one ("", file) without sites."""
    test: Path
    site_tests: tuple[tuple[str, Path], ...] = ()
    """(site, file) for the sites that hold a test set of their own."""

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(site for site, _ in self.train if site)


def find_layout(path: str, ext: str) -> Layout:
    root = Path(path)
    if not root.is_dir():
        raise DataError(
            f"data.path: {root} is not a folder (expected train.{ext} and test.{ext}, or clients/<site>/train.{ext})"
        )
    test = root / f"test.{ext}"
    if not test.is_file():
        raise DataError(f"data.path: {test} is missing (the server's test set)")
    clients = root / "clients"
    if clients.is_dir():
        folders = sorted(p for p in clients.iterdir() if p.is_dir())
        if not folders:
            raise DataError(f"data.path: {clients} has no site folders")
        train = []
        for folder in folders:
            file = folder / f"train.{ext}"
            if not file.is_file():
                raise DataError(f"data.path: site folder {folder} has no train.{ext}")
            train.append((folder.name, file))
        own = tuple((f.name, f / f"test.{ext}") for f in folders if (f / f"test.{ext}").is_file())
        return Layout(tuple(train), test, own)
    single = root / f"train.{ext}"
    if not single.is_file():
        raise DataError(f"data.path: {root} has neither train.{ext} nor clients/<site>/train.{ext}")
    return Layout((("", single),), test)
