"""`init_from: latest`: a run continues from the newest model its experiment published;
`init_from: <file>.safetensors`: a run starts from pretrained weights."""

import json

import pytest
import torch
from mlflow.tracking import MlflowClient

from fedprune.config import ConfigError
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


def test_a_warm_start_continues_the_round_count_schedule_and_sampling(make_config, mnist_small):
    """Nightly runs of 2 rounds: the second samples, seeds and prunes as rounds 3-4 of one
    long run would, not as a repeat of rounds 1-2."""
    from fedprune import steps
    from fedprune.io.store import LocalBackend, RunStore, rounds_before_of

    ramp = {"kind": "iterative", "target": 0.8, "every": 1, "rate": 0.6}
    cfg = make_config(
        rounds=2, init_from="latest", sampling={"count": 2}, pruning={"schedule": ramp}
    )
    runs = [engine.run_experiment(cfg, data=mnist_small) for _ in range(2)]
    method = steps.Runtime.build(cfg, data=mnist_small).method
    assert [m.target_sparsity for r in runs for m in r.history] == [
        method.target(r) for r in range(1, 5)
    ]
    client = MlflowClient(cfg.tracking)
    tags = [client.get_run(r.run_id).data.tags["rounds_before"] for r in runs]
    assert tags == ["0", "2"]
    store = RunStore(LocalBackend(cfg.store), cfg.experiment, runs[1].run_id)
    model = store.load_round(1, ["model.safetensors"])["model.safetensors"]
    assert rounds_before_of(model) == 2, "the count travels with the model"
    sampled = [
        [u["client"] for u in json.loads(store.load_round(r, ["updates.json"])["updates.json"])]
        for r in (1, 2)
    ]
    assert sampled == [steps.sample_clients(cfg, 3), steps.sample_clients(cfg, 4)]
    assert sampled != [steps.sample_clients(cfg, 1), steps.sample_clients(cfg, 2)]


def test_warm_start_never_takes_a_run_that_did_not_finish(make_config, mnist_small):
    from fedprune.io.store import MANIFEST, LocalBackend, RunStore

    cfg = make_config(rounds=1)
    finished = engine.run_experiment(cfg, data=mnist_small)
    killed = engine.run_experiment(cfg, data=mnist_small)
    store = RunStore(LocalBackend(cfg.store), cfg.experiment, killed.run_id)
    (store.backend.root / store.prefix / MANIFEST).unlink()  # as a killed run leaves it
    assert not store.finished() and store.published_rounds() == [1]
    warm = engine.run_experiment(make_config(rounds=1, init_from="latest"), data=mnist_small)
    tags = MlflowClient(cfg.tracking).get_run(warm.run_id).data.tags
    assert tags["init_from"] == f"test/{finished.run_id}/rounds/0001"


def test_warm_start_without_history_starts_fresh(make_config, mnist_small):
    cfg = make_config(rounds=1, init_from="latest")
    result = engine.run_experiment(cfg, data=mnist_small)
    assert result.history[0].sparsity == 0.0
    assert MlflowClient(cfg.tracking).get_run(result.run_id).data.tags["init_from"] == "scratch"


def test_a_pretrained_start_from_a_safetensors_file(make_config, mnist_small, tmp_path):
    from safetensors.torch import save_file

    from fedprune.engine.round import initial_model
    from fedprune.errors import UserError
    from fedprune.io.store import LocalBackend
    from fedprune.steps import Runtime

    donor = Runtime.build(make_config(seed=7), data=mnist_small).model.state_dict()
    path = tmp_path / "pretrained.safetensors"
    save_file({k: v.contiguous() for k, v in donor.items()}, path)
    cfg = make_config(init_from=str(path))
    rt = Runtime.build(cfg, data=mnist_small)
    start, source, _ = initial_model(rt, LocalBackend(str(tmp_path)))
    assert source == str(path)
    assert all(torch.equal(start.weights[k], donor[k]) for k in donor)
    assert engine.run_experiment(cfg, data=mnist_small).history[-1].test["accuracy"] > 0.5

    for tensors, message in (
        (
            {k: v for k, v in donor.items() if k != "out.bias"},
            "lacks tensor 'out.bias' of model mlp",
        ),
        (
            {**donor, "fc1.weight": torch.zeros(3, 3)},
            r"tensor 'fc1.weight' is \(3, 3\) in .* but \(200, 784\)",
        ),
        ({**donor, "extra": torch.zeros(1)}, "has tensor 'extra', which model mlp does not"),
    ):
        save_file({k: v.contiguous() for k, v in tensors.items()}, path)
        with pytest.raises(UserError, match=message):
            initial_model(rt, LocalBackend(str(tmp_path)))
    with pytest.raises(ConfigError, match="init_from: .*not scratch, latest, or the path"):
        make_config(init_from="weights.pt")
