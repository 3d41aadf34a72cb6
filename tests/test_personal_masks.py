"""LotteryFL's personal masks: each client prunes its own mask and keeps it across rounds, in
the run's store, so a resumed run and the Kubeflow components continue exactly where the
local engine would."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from components.aggregate.component import aggregate
from components.broadcast.component import broadcast
from components.evaluate.component import evaluate
from components.finalise.component import finalise
from components.init_model.component import init_model
from components.partition.component import partition
from components.setup.component import setup
from components.train.component import train_group
from fedprune import steps
from fedprune.config.kubeflow import dag_shape
from fedprune.engine import local as engine
from fedprune.engine.round import PERSONAL
from fedprune.io.codec import decode
from fedprune.io.publish import round_model
from fedprune.io.state import STATE, ClientState
from fedprune.io.store import LocalBackend, RunStore
from fedprune.pruning.masks import full_mask, measure_sparsity, prunable_names
from tests.conftest import failing_at_round

ROUNDS = 4
LOTTERY = {
    "method": "lottery",
    "schedule": {"kind": "iterative", "target": 0.8, "every": 1, "rate": 0.5},
    "personal": True,
    "accuracy_threshold": 0.0,  # prune whenever behind
}


@pytest.fixture
def personal_cfg(make_config):
    return make_config(rounds=ROUNDS, sampling={"count": 2}, pruning=LOTTERY)


def _store(cfg, run_id: str) -> RunStore:
    return RunStore(LocalBackend(cfg.store), cfg.experiment, run_id)


def _uploads(store: RunStore, round_: int) -> dict[int, bytes]:
    """The personal models (uploads) a round published, by client."""
    state = ClientState.after(store, round_)
    fresh = [c for c in state.clients_with(PERSONAL) if state.blob_rounds[PERSONAL][c] == round_]
    return {c: state.blob(PERSONAL, c) for c in fresh}


def _sparsity(mask: dict[str, torch.Tensor]) -> float:
    return measure_sparsity({}, mask).sparsity


def test_each_client_prunes_its_own_mask_and_keeps_it(personal_cfg, mnist_small):
    cfg = personal_cfg
    result = engine.run_experiment(cfg, data=mnist_small)
    store = _store(cfg, result.run_id)
    method = steps.Runtime.build(cfg, data=mnist_small).method
    last: dict[int, dict[str, torch.Tensor]] = {}
    previous = None
    for round_ in range(1, ROUNDS + 1):
        uploads = {c: decode(p) for c, p in _uploads(store, round_).items()}
        assert sorted(uploads) == steps.sample_clients(cfg, round_)
        for client, (_, mask) in uploads.items():
            sparsity = _sparsity(mask)
            assert sparsity <= method.target(round_) + 1e-4
            if client in last:  # masks only shrink: a pruned weight never returns
                assert all(not (mask[n] & ~last[client][n]).any() for n in mask)
                assert (
                    sparsity > _sparsity(last[client]) or sparsity >= method.target(round_) - 1e-4
                )
            last[client] = mask
        assert result.history[round_ - 1].personal_sparsity == pytest.approx(
            sum(_sparsity(m) for _, m in uploads.values()) / len(uploads)
        )
        global_model = round_model(store, round_)[0]
        assert all(keep.all() for keep in global_model.mask.values())  # the server never prunes
        if previous is not None:  # a weight no client kept this round keeps its global value
            for name in global_model.mask:
                nobody = ~torch.stack([m[name] for _, m in uploads.values()]).any(0)
                assert nobody.any()
                assert torch.equal(global_model.weights[name][nobody], previous[name][nobody])
        previous = global_model.weights
    seen: set[int] = set()  # a client with a personal mask downloads the values under it
    for metrics in result.history:
        sampled = steps.sample_clients(cfg, metrics.round)
        assert metrics.values_only_downloads == len(seen & set(sampled))
        seen |= set(sampled)
    assert result.history[-1].bytes_down < 0.6 * result.history[0].bytes_down
    masks = list(last.values())
    assert any(not torch.equal(masks[0][n], other[n]) for other in masks[1:] for n in other)
    assert max(_sparsity(m) for m in masks) == pytest.approx(0.8, abs=1e-4)
    final = result.history[-1]
    assert 0.5 < final.personal_accuracy <= 1 and final.sparsity == 0.0
    assert final.personal_sparsity > 0.5
    costs = result.costs  # the personal models with sparse kernels: fewer MACs than the union
    assert costs["personal_macs_sparse_kernels"] < costs["macs_sparse_kernels"] == costs["macs"]


def test_a_client_prunes_only_when_accurate_enough_and_rewinds(
    personal_cfg, make_config, mnist_small
):
    method = steps.Runtime.build(personal_cfg, data=mnist_small).method
    trained = {n: t + 0.01 for n, t in method.ctx.model.state_dict().items()}
    mask = full_mask(trained, prunable_names(trained))
    kept, same = method.client_start(
        trained, mask, round_=1, accuracy=lambda w: 0.0
    )  # threshold 0: prune
    assert _sparsity(same) == pytest.approx(0.5, abs=1e-5)
    for name, keep in same.items():
        assert torch.equal(kept[name][keep], method.initial[name][keep])
    strict = make_config(pruning={**LOTTERY, "accuracy_threshold": 0.9})
    picky = steps.Runtime.build(strict, data=mnist_small).method
    weights, unchanged = picky.client_start(trained, mask, round_=1, accuracy=lambda w: 0.89)
    assert unchanged is mask and all(torch.equal(weights[n], trained[n]) for n in mask)
    _, capped = method.client_start(
        trained, same, round_=1, accuracy=lambda w: 1.0
    )  # at round 1's target
    assert capped is same


def test_resume_continues_with_the_stored_personal_masks(personal_cfg, mnist_small):
    uninterrupted = engine.run_experiment(personal_cfg, data=mnist_small)
    with failing_at_round(3), pytest.raises(RuntimeError, match="injected"):
        engine.run_experiment(personal_cfg, data=mnist_small)
    runs = [p.name for p in (Path(personal_cfg.store) / personal_cfg.experiment).iterdir()]
    failed = next(r for r in runs if r != uninterrupted.run_id)
    resumed = engine.run_experiment(personal_cfg, data=mnist_small, resume=failed)
    exact = ("test_accuracy", "personal_accuracy", "personal_sparsity", "bytes_up", "train_loss")
    for ours, theirs in zip(resumed.history, uninterrupted.history, strict=True):
        assert [ours.flat()[k] for k in exact] == [theirs.flat()[k] for k in exact]
    for round_ in (3, 4):  # trained from masks read back from the store: byte-identical
        assert _uploads(_store(personal_cfg, failed), round_) == _uploads(
            _store(personal_cfg, uninterrupted.run_id), round_
        )


def _artifact(path: Path) -> SimpleNamespace:
    return SimpleNamespace(path=str(path))


def test_components_read_and_write_personal_masks_as_the_engine_does(
    personal_cfg, mnist_small, tmp_path
):
    """The Kubeflow components' functions, called in order as the pipeline would (two pods of
    one client each per round), give the local engine's results byte for byte."""
    cfg = personal_cfg.model_copy(update={"kubeflow": personal_cfg.kubeflow.model_copy(
        update={"clients_per_pod": 1})})  # fmt: skip
    local = engine.run_experiment(cfg, data=mnist_small)
    config_json = cfg.model_dump_json()
    run_id = setup(config_json, json.dumps(dag_shape(cfg)))
    shards = _artifact(tmp_path / "shards.json")
    partition(config_json, shards)
    current = _artifact(tmp_path / "model-0")
    init_model(config_json, run_id, shards, current)
    logged: dict[str, float] = {}
    metrics = SimpleNamespace(log_metric=logged.__setitem__)
    for round_ in range(1, ROUNDS + 1):
        message = _artifact(tmp_path / f"message-{round_}")
        broadcast(config_json, run_id, current, shards, round_, message)
        groups = [_artifact(tmp_path / f"updates-{round_}-{g}") for g in range(2)]
        for group, updates in enumerate(groups):
            train_group(config_json, run_id, message, shards, group, "", updates)
        previous, current = current, _artifact(tmp_path / f"model-{round_}")
        screening = _artifact(tmp_path / f"screening-{round_}")
        aggregate(config_json, message, groups, previous, shards, current, screening)
        evaluate(config_json, run_id, message, groups, current, screening, shards, metrics)
        ours = local.history[round_ - 1]
        assert logged["personal_accuracy"] == ours.personal_accuracy
        assert logged["personal_sparsity"] == ours.personal_sparsity
        assert not math.isnan(logged["personal_accuracy"])
    finalise(config_json, run_id, current, shards, _artifact(tmp_path / "final"))
    pods, engine_run = _store(cfg, run_id), _store(cfg, local.run_id)
    for round_ in range(1, ROUNDS + 1):
        assert _uploads(pods, round_) == _uploads(engine_run, round_)
        names = ["model.safetensors", STATE]
        assert pods.load_round(round_, names) == engine_run.load_round(round_, names)
    assert pods.load("", ["costs.json"]) == engine_run.load("", ["costs.json"])


def test_accuracy_on_a_label_mix_weights_classes_by_the_clients_share():
    per_class = torch.tensor([1.0, 0.5, math.nan], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2])  # class 2 has no test samples: left out
    assert steps.mix_accuracy(per_class, labels) == pytest.approx((2 * 1.0 + 0.5) / 3)


def test_a_personal_download_is_the_global_values_under_the_clients_mask(make_config):
    cfg = make_config(pruning=LOTTERY, compression={"values": "int8"})
    torch.manual_seed(0)
    weights = {"w": torch.randn(50, 40), "b": torch.randn(40)}
    global_model = steps.GlobalModel(weights, {"w": torch.ones(50, 40, dtype=torch.bool)})
    own = {"w": torch.rand(50, 40) > 0.7}
    payload = steps.broadcast(global_model, cfg)
    sent = steps.downloads(global_model, payload, [0, 1], held={}, personal={1: own}, cfg=cfg)
    assert (sent.full_clients, sent.values_only, sorted(sent.personal)) == (1, 1, [1])
    assert sent.bytes == len(payload) + len(sent.personal[1])
    assert len(sent.personal[1]) < 0.5 * len(payload)  # 30% of the values, no mask
    everything, _ = decode(payload)  # the same int8 scale: exactly the broadcast's values
    mine = steps.Personal(own, sent.personal[1]).received(everything)
    assert torch.equal(mine["w"], everything["w"] * own["w"])
    assert torch.equal(mine["b"], everything["b"])
