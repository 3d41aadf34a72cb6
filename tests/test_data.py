import gzip
import struct

import numpy as np
import pytest

from fedprune.config import parse_config
from fedprune.tasks.datasets import (
    DATASETS,
    DataError,
    DataShape,
    data_shape,
    fetchable,
    load_dataset,
    read_idx,
)


def write_idx(path, array: np.ndarray, compress: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def fake_dataset(root, name: str, compress: bool, n: int = 50):
    folder = root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    for prefix, count in (("train", n), ("t10k", n // 5)):
        write_idx(
            folder / f"{prefix}-images-idx3-ubyte{suffix}",
            rng.integers(0, 256, (count, 28, 28)),
            compress,
        )
        write_idx(
            folder / f"{prefix}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, count), compress
        )


@pytest.mark.parametrize("name,compress", [("mnist", False), ("fashion-mnist", True)])
def test_loads_raw_and_gzipped_idx(tmp_path, name, compress):
    fake_dataset(tmp_path, name, compress)
    data = load_dataset(name, root=tmp_path)
    assert data.x_train.shape == (50, 1, 28, 28) and data.x_test.shape == (10, 1, 28, 28)
    assert data.y_train.dtype.is_floating_point is False
    assert data.input_shape == (1, 28, 28)


def test_subset_limits_samples(tmp_path):
    fake_dataset(tmp_path, "mnist", False)
    data = load_dataset("mnist", root=tmp_path, train_subset=20, test_subset=3)
    assert len(data.y_train) == 20 and len(data.y_test) == 3


def test_missing_files_say_how_to_fetch(tmp_path):
    with pytest.raises(DataError, match="fedprune data fetch fashion-mnist"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_unknown_dataset_lists_allowed(tmp_path):
    with pytest.raises(DataError, match="IDX data sets: fashion-mnist, mnist"):
        load_dataset("cifar10", root=tmp_path)


def test_truncated_idx_is_rejected(tmp_path):
    path = tmp_path / "bad"
    write_idx(path, np.zeros((4, 2, 2)))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match="header says"):
        read_idx(path)


def test_real_mnist_is_complete(mnist_small):
    full = load_dataset("mnist")
    assert full.x_train.shape == (60000, 1, 28, 28) and full.x_test.shape == (10000, 1, 28, 28)
    assert full.num_classes == 10
    assert abs(float(full.x_train.mean())) < 0.01  # normalised with MNIST's mean and std
    # the registered shape (what the aggregation pod builds models from, without the data)
    # is the data's own
    seen = DataShape(tuple(full.x_train.shape[1:]), int(full.y_train.max()) + 1)
    assert data_shape(parse_config({}).data, "classification") == seen == full.shape


def test_config_accepts_the_registered_datasets_only():
    from fedprune.config import ConfigError

    for name in set(fetchable()) & set(DATASETS.names()):  # the rest are CSV folders
        assert parse_config({"data": {"dataset": name}}).data.dataset == name
    with pytest.raises(ConfigError, match="data.dataset: unknown 'cifar10'; registered: .*'mnist'"):
        parse_config({"data": {"dataset": "cifar10"}})


@pytest.mark.slow
def test_fetch_fashion_mnist_from_debian(tmp_path):
    from fedprune.tasks.datasets import fetch

    fetch("fashion-mnist", root=tmp_path)
    data = load_dataset("fashion-mnist", root=tmp_path)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.num_classes == 10
    seen = DataShape(tuple(data.x_train.shape[1:]), int(data.y_train.max()) + 1)
    assert (
        data_shape(parse_config({"data": {"dataset": "fashion-mnist"}}).data, "classification")
        == seen
    )


@pytest.mark.parametrize(
    ("name", "label", "task", "rows", "features"),
    [
        ("breast_cancer", "diagnosis", "classification", (455, 114), 30),
        ("diabetes", "progression", "regression", (354, 88), 10),
    ],
)
def test_bundled_tables_fetch_as_csv_folders(tmp_path, name, label, task, rows, features):
    from fedprune.tasks.datasets import fetch, load_data

    folder = fetch(name, root=tmp_path)
    written = {f: (folder / f).read_bytes() for f in ("train.csv", "test.csv")}
    fetch(name, root=tmp_path)  # a second fetch finds the files and writes nothing
    assert {f: (folder / f).read_bytes() for f in written} == written
    section = {"dataset": "csv", "path": str(folder), "label": label}
    data = load_data(parse_config({"task": task, "data": section}).data, task)
    assert (len(data.x_train), len(data.x_test)) == rows
    assert data.input_shape == (features,) and data.standardize
    assert data.num_classes == (2 if task == "classification" else 1)


def test_a_missing_bundled_table_says_how_to_fetch(tmp_path):
    from fedprune.tasks.datasets import load_data

    section = {"dataset": "csv", "path": str(tmp_path / "breast_cancer"), "label": "diagnosis"}
    with pytest.raises(DataError, match="fedprune data fetch breast_cancer"):
        load_data(parse_config({"data": section}).data, "classification")
