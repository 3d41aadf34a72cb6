from __future__ import annotations

from pathlib import Path

import pytest

from fedprune.config import ExperimentConfig, parse_config
from fedprune.tasks.datasets import FederatedData, load_dataset

pytest_plugins = ["tests.services"]  # real S3 and MLflow servers


@pytest.fixture(scope="session")
def mnist_small() -> FederatedData:
    """A real MNIST subset (`make test` fetches the files first)."""
    return load_dataset("mnist", train_subset=6000, test_subset=2000)


@pytest.fixture
def make_config(tmp_path: Path):
    """A tiny experiment whose store and MLflow database live in this test's tmp folder."""

    def build(**overrides) -> ExperimentConfig:
        raw = {
            "experiment": "test",
            "rounds": 3,
            "data": {"num_clients": 4, "train_subset": 6000, "test_subset": 2000},
            "client": {"epochs": 1, "batch_size": 32, "lr": 0.05},
            "store": str(tmp_path / "runs"),
            "tracking": f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}",
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        return parse_config(raw)

    return build
