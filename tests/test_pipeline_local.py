"""The compiled pipeline, run by kfp.local in this environment, against the local engine."""

import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fedprune import steps
from fedprune.engine import local as engine
from fedprune.io.exchange import read_model
from fedprune.io.store import model_and_state
from fedprune.pruning.masks import measure_sparsity
from pipelines.federated_pruning import run_locally


def test_kfp_local_matches_local_engine(make_config, mnist_small, tmp_path):
    cfg = make_config(
        rounds=3,
        data={"num_clients": 4, "train_subset": 6000, "test_subset": 2000},
        # PruneFL crosses every pod boundary a method can: the initial prune on client 0's
        # shard (init pod), importance files from the clients in round 2 (train → aggregate
        # pods), a re-picked mask. Round 2 re-sends the initial mask: values-only downloads.
        pruning={
            "method": "prunefl",
            "schedule": {"kind": "oneshot", "target": 0.8, "at_round": 1},
            "every": 2,
            "initial_epochs": 1,
        },
        callbacks=["tests.callbacks:kept_weights_and_uploads"],  # run in the evaluate pods too
        compression={"encoding": "sparse"},
        # A stateful strategy: its moments travel from one aggregate pod to the next inside
        # the global model artifact and are published with every round.
        aggregation={"method": "fedadam"},
        kubeflow={"clients_per_pod": 2, "aggregator": {"device": "cpu"}},
    )
    started = time.perf_counter()
    local = engine.run_experiment(cfg, data=mnist_small)
    engine_seconds = time.perf_counter() - started

    started = time.perf_counter()
    final_path = run_locally(cfg, tmp_path / "pipeline-root")
    kfp_seconds = time.perf_counter() - started
    print(f"\nlocal engine {engine_seconds:.1f} s, kfp.local {kfp_seconds:.1f} s")

    # Same steps, same seeds, same summation order: the numbers are identical, not just close.
    final = read_model(final_path)
    accuracy = steps.evaluate(steps.Runtime.build(cfg, data=mnist_small), final)
    assert accuracy.metrics["accuracy"] == local.history[-1].test["accuracy"]
    assert accuracy.loss == local.history[-1].test_loss
    report = measure_sparsity(final.weights, final.mask)
    assert report.sparsity == local.history[-1].sparsity == pytest.approx(0.8, abs=1e-3)

    # Both runs published the same rounds to the store, down to the bytes of each model.
    folders = {p.name: p for p in (Path(cfg.store) / cfg.experiment).iterdir()}
    kfp_run = next(r for name, r in folders.items() if name != local.run_id)
    published = [
        f"rounds/{r:04d}/{o}" for r in (1, 2, 3) for o in ("model.safetensors", "state.json")
    ]
    for name in [*published, "model.safetensors"]:
        assert (kfp_run / name).read_bytes() == (folders[local.run_id] / name).read_bytes(), name
    # the rounds carry fedadam's moments, the final model does not
    _, _, moments = model_and_state((kfp_run / "rounds/0003/model.safetensors").read_bytes())
    assert moments and {k.split(".")[0] for k in moments} == {"m", "v"}
    assert model_and_state((kfp_run / "model.safetensors").read_bytes())[2] == {}
    assert [m.values_only_downloads for m in local.history] == [0, 4, 0]
    assert [m.importance_bytes_up > 0 for m in local.history] == [False, True, False]
    assert (kfp_run / "manifest.json").exists()  # finalise published the run's final outputs

    client = MlflowClient(cfg.tracking)
    runs = client.search_runs(
        [client.get_experiment_by_name(cfg.experiment).experiment_id],
        filter_string="tags.engine = 'kubeflow'",
    )
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    kfp_accuracy = client.get_metric_history(runs[0].info.run_id, "test_accuracy")
    assert sorted(p.step for p in kfp_accuracy) == [1, 2, 3]
    by_round = {p.step: p.value for p in kfp_accuracy}
    assert by_round == {m.round: m.test["accuracy"] for m in local.history}
    assert all(m.extra["kept_weights"] > 0 for m in local.history)
    metrics = ("bytes_up", "importance_bytes_up", "bytes_down", "sparsity", "test_loss")
    for metric in (*metrics, "max_abs_kept_weight", "kept_weights", "mean_upload_bytes"):
        kfp = {p.step: p.value for p in client.get_metric_history(runs[0].info.run_id, metric)}
        assert kfp == {m.round: m.flat()[metric] for m in local.history}, metric
