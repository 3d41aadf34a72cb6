"""Local-engine options that change how a run is executed, never what it computes."""

import math

import torch

from fedprune.engine import local as engine


def strip(history):
    return [
        (m.test["accuracy"], m.test_loss, m.sparsity, m.bytes_up, m.bytes_down) for m in history
    ]


def test_workers_give_the_sequential_results(make_config, mnist_small):
    # A client's numbers depend on its intra-op threads; with one thread per client in both
    # runs (the pool gives each worker cores // workers), two worker processes must
    # reproduce the sequential run exactly.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = make_config(rounds=2, pruning={"schedule": {"kind": "oneshot", "target": 0.5}})
        sequential = engine.run_experiment(cfg, data=mnist_small).history
        parallel_cfg = make_config(
            rounds=2,
            pruning={"schedule": {"kind": "oneshot", "target": 0.5}},
            engine={"workers": 2},
        )
        parallel = engine.run_experiment(parallel_cfg, data=mnist_small).history
    finally:
        torch.set_num_threads(threads)
    assert strip(parallel) == strip(sequential)


def test_vectorized_run_matches_sequential_within_noise(make_config, mnist_small):
    base = {"rounds": 2, "client": {"epochs": 1, "batch_size": 32, "lr": 0.05, "momentum": 0.5}}
    sequential = engine.run_experiment(make_config(**base), data=mnist_small).history
    base["client"] = {**base["client"], "vectorize": True}
    together = engine.run_experiment(make_config(**base), data=mnist_small).history
    for a, b in zip(sequential, together, strict=True):
        assert abs(a.test["accuracy"] - b.test["accuracy"]) <= 0.002  # ≤ 4 of 2,000 test images
        assert math.isclose(a.test_loss, b.test_loss, rel_tol=1e-3)
        assert a.bytes_up == b.bytes_up


def test_eval_every_skips_tests_but_not_the_last_round(make_config, mnist_small):
    from mlflow.tracking import MlflowClient

    cfg = make_config(rounds=3, eval={"every": 2})
    result = engine.run_experiment(cfg, data=mnist_small)
    assert [m.tested for m in result.history] == [False, True, True]
    assert not result.history[0].tested and math.isnan(result.history[0].test_loss)
    client = MlflowClient(cfg.tracking)
    assert [p.step for p in client.get_metric_history(result.run_id, "test_accuracy")] == [2, 3]
    assert len(client.get_metric_history(result.run_id, "sparsity")) == 3
