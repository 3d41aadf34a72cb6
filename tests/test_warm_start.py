"""`init_from: latest`: a run continues from the newest model its experiment published."""

import pytest
from mlflow.tracking import MlflowClient

from fedprune.engine import local as engine


def test_warm_start_continues_from_the_newest_published_model(make_config, mnist_small):
    first = engine.run_experiment(
        make_config(rounds=2, pruning={"schedule": {"kind": "oneshot", "target": 0.8}}),
        data=mnist_small,
    )
    cfg = make_config(rounds=1, init_from="latest")  # no pruning of its own
    second = engine.run_experiment(cfg, data=mnist_small)
    # the 80% mask came with the model and nothing revives pruned weights
    assert second.history[0].sparsity == pytest.approx(0.8, abs=1e-3)
    assert second.history[0].test["accuracy"] >= first.history[-1].test["accuracy"] - 0.02
    tags = MlflowClient(cfg.tracking).get_run(second.run_id).data.tags
    assert tags["init_from"] == f"test/{first.run_id}/rounds/0002"

    third = engine.run_experiment(cfg, data=mnist_small)  # now the second run is the newest
    tags = MlflowClient(cfg.tracking).get_run(third.run_id).data.tags
    assert tags["init_from"] == f"test/{second.run_id}/rounds/0001"


def test_warm_start_without_history_starts_fresh(make_config, mnist_small):
    cfg = make_config(rounds=1, init_from="latest")
    result = engine.run_experiment(cfg, data=mnist_small)
    assert result.history[0].sparsity == 0.0
    assert MlflowClient(cfg.tracking).get_run(result.run_id).data.tags["init_from"] == "scratch"
