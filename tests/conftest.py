from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fedprune.config import ExperimentConfig, parse_config
from fedprune.tasks.datasets import FederatedData, load_dataset

pytest_plugins = ["tests.services"]  # real S3 and MLflow servers


@pytest.fixture(scope="session")
def mnist_small() -> FederatedData:
    """A real MNIST subset (`make test` fetches the files first)."""
    return load_dataset("mnist", train_subset=6000, test_subset=2000)


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its tables made. Copied into a test's run folder it
    saves that run MLflow's schema migrations (~3 s on two cores); the tests that run
    `fedprune` without `make_config` still create their databases from nothing."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    SqlAlchemyStore(f"sqlite:///{path}", str(path.parent / "artifacts")).engine.dispose()
    return path


@pytest.fixture
def make_config(tmp_path: Path, mlflow_template: Path):
    """A tiny experiment whose store and MLflow database live in this test's tmp folder (the
    database starts as a copy of `mlflow_template`)."""
    database = tmp_path / "runs" / "mlflow.db"

    def build(**overrides) -> ExperimentConfig:
        if not database.exists():
            database.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(mlflow_template, database)
        raw = {
            "experiment": "test",
            "rounds": 3,
            "data": {"num_clients": 4, "train_subset": 6000, "test_subset": 2000},
            "client": {"epochs": 1, "batch_size": 32, "lr": 0.05},
            "store": str(tmp_path / "runs"),
            "tracking": f"sqlite:///{database}",
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        return parse_config(raw)

    return build


@contextmanager
def failing_at_round(round_: int) -> Iterator[None]:
    """Inside: publishing round `round_` raises RuntimeError('injected failure …'), so a run
    stops with rounds 1…`round_` - 1 published, unfinished (as a killed run leaves it)."""
    from fedprune.io.store import RunStore

    publish = RunStore.publish_round

    def fail(self, number, objects):
        if number == round_:
            raise RuntimeError(f"injected failure in round {round_}")
        publish(self, number, objects)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunStore, "publish_round", fail)
        yield


SLOWEST_FILES = (
    "test_pipeline_local.py",
    "test_pipeline_sites.py",
    "test_privacy.py",
    "test_faults.py",
    "test_submit.py",
    "test_segments.py",
)
"""Started first: `make test` hands whole files to two xdist workers in collection order
(`--no-loadscope-reorder`), and a long file handed out last leaves the other worker idle
while it runs."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOWEST_FILES.index(name) if name in SLOWEST_FILES else len(SLOWEST_FILES)

    items.sort(key=rank)  # stable: within a file, and among the rest, the usual order
