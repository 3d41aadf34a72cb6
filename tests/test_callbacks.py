"""Callbacks named in the config: called after every round, their metrics logged and
comparable; a broken one is a clear error that loses nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fedprune.cli import main
from fedprune.engine import local as engine
from fedprune.engine.callbacks import CallbackError
from fedprune.io.store import LocalBackend, RunStore

CALLBACK = "tests.callbacks:kept_weights_and_uploads"


def test_callback_metrics_are_logged_each_round_and_comparable(make_config, mnist_small, capsys):
    cfg = make_config(
        rounds=2,
        callbacks=[CALLBACK],
        pruning={"schedule": {"kind": "oneshot", "target": 0.5, "at_round": 1}},
    )
    result = engine.run_experiment(cfg, data=mnist_small)
    kept = [m.extra["kept_weights"] for m in result.history]
    masked = 784 * 200 + 200 * 200 + 200 * 10  # the MLP's weight matrices (biases unmasked)
    assert kept == [round((1 - m.sparsity) * masked) for m in result.history]
    assert kept[-1] == masked // 2
    client = MlflowClient(cfg.tracking)
    logged = client.get_metric_history(result.run_id, "kept_weights")
    assert {p.step: p.value for p in logged} == dict(enumerate(kept, start=1))
    assert main(["compare", "--tracking", cfg.tracking, "--metric", "mean_upload_bytes",
                 "--plot", str(Path(cfg.store) / "c.png")]) == 0  # fmt: skip
    assert result.run_id[:8] in capsys.readouterr().out


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "tests.callbacks:no_such_function",
            "'tests.callbacks' has no callable 'no_such_function'",
        ),
        ("tests.callbacks:not_a_dict", "returned list, not a dict of metrics"),
        ("tests.callbacks:takes_a_built_in_name", "'test_accuracy' is taken"),
    ],
)
def test_a_broken_callback_is_a_clear_error_and_publishes_nothing(
    make_config, mnist_small, path, message
):
    cfg = make_config(rounds=2, callbacks=[path])
    with pytest.raises(CallbackError, match=message):
        engine.run_experiment(cfg, data=mnist_small)
    runs = list((Path(cfg.store) / cfg.experiment).glob("*")) if Path(cfg.store).exists() else []
    for run in runs:  # a failing callback fails its round before the round is published
        assert RunStore(LocalBackend(cfg.store), cfg.experiment, run.name).published_rounds() == []
