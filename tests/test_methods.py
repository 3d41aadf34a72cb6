"""The pruning methods: declared sparsity every round, what makes each method itself, and a
short end-to-end run of each through the local engine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load as st_load

from fedprune import steps
from fedprune.config import parse_config
from fedprune.engine import local as engine
from fedprune.engine.export import SHRUNK
from fedprune.io.codec import decode, encode
from fedprune.io.publish import round_model
from fedprune.io.store import LocalBackend, RunStore, model_from_bytes
from fedprune.pruning.channels import (
    ChannelGraph,
    expand_weights,
    macs,
    shrink,
    slice_weights,
    structured_mask,
)
from fedprune.pruning.masks import apply_mask_, full_mask, prunable_names
from fedprune.pruning.methods import RoundInputs
from fedprune.pruning.methods.feddst import prune_and_regrow
from fedprune.pruning.schedules import schedule_for
from fedprune.tasks.models import MODELS

ONESHOT_80 = {"kind": "oneshot", "target": 0.8, "at_round": 1}
METHODS = {
    "dense": {"method": "magnitude"},
    "magnitude-server": {"method": "magnitude", "schedule": ONESHOT_80},
    "magnitude-client": {"method": "magnitude", "schedule": ONESHOT_80, "placement": "client"},
    "structured": {"method": "structured", "schedule": ONESHOT_80},
    "feddst": {"method": "feddst", "schedule": ONESHOT_80, "every": 1},
    "prunefl": {
        "method": "prunefl",
        "schedule": ONESHOT_80,
        "every": 2,
        "initial_epochs": 1,
    },
    "lottery": {
        "method": "lottery",
        "schedule": {"kind": "iterative", "target": 0.8, "every": 1, "rate": 0.5},
    },
}


def _masks(cfg, run_id: str, rounds: int) -> list[dict[str, torch.Tensor]]:
    store = RunStore(LocalBackend(cfg.store), cfg.experiment, run_id)
    return [round_model(store, r)[0].mask for r in range(1, rounds + 1)]


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_keeps_its_declared_sparsity(make_config, mnist_small, name):
    cfg = make_config(pruning=METHODS[name])
    result = engine.run_experiment(cfg, data=mnist_small)
    tolerance = 0.01 if name == "structured" else 1e-4  # whole channels: coarse steps
    for metrics in result.history:
        if name == "magnitude-client":  # each upload is at the target; the union is denser
            assert metrics.target_sparsity - 0.05 < metrics.sparsity <= metrics.target_sparsity
        else:
            assert metrics.sparsity == pytest.approx(metrics.target_sparsity, abs=tolerance)
    assert result.history[-1].test["accuracy"] > 0.5, f"{name} did not learn"
    assert result.history[-1].target_sparsity == (0.0 if name == "dense" else 0.8)
    if name == "prunefl":  # importance travels in round 2 only, and is counted in bytes up
        assert [m.importance_bytes_up > 0 for m in result.history] == [False, True, False]


def test_client_side_pruning_uploads_at_the_target(make_config, mnist_small):
    cfg = make_config(pruning=METHODS["magnitude-client"])
    rt = steps.Runtime.build(cfg, data=mnist_small)
    payload = steps.broadcast(steps.init_global(rt), cfg)
    for update in steps.train_clients(rt, payload, [0, 1], round_=1):
        _, mask = decode(update.payload)
        kept = sum(int(m.sum()) for m in mask.values())
        assert 1 - kept / sum(m.numel() for m in mask.values()) == pytest.approx(0.8, abs=1e-5)


def test_feddst_sparsity_constant_while_the_mask_moves(make_config, mnist_small):
    cfg = make_config(pruning=METHODS["feddst"])
    result = engine.run_experiment(cfg, data=mnist_small)
    assert {round(m.sparsity, 6) for m in result.history} == {0.8}
    assert result.history[0].bytes_up < result.history[0].total_params * 4 * 4 / 2  # sparse
    masks = _masks(cfg, result.run_id, cfg.rounds)
    for before, after in zip(masks, masks[1:], strict=False):
        changed = sum(int((before[n] != after[n]).sum()) for n in before)
        assert changed > 0


def test_prune_and_regrow_swaps_smallest_weights_for_largest_gradients():
    weights = {"w": torch.tensor([[0.1, -0.5, 0.0, 2.0], [0.0, 0.3, -0.2, 0.0]])}
    mask = {"w": weights["w"] != 0}
    grads = {"w": torch.tensor([[9.0, 9.0, 0.5, 9.0], [3.0, 9.0, 9.0, 0.1]])}
    new = prune_and_regrow(weights, grads, mask, share=0.4)  # 5 kept → swap 2
    assert int(new["w"].sum()) == int(mask["w"].sum())
    assert not new["w"][0, 0] and not new["w"][1, 2]  # |0.1| and |-0.2| dropped
    assert new["w"][1, 0] and new["w"][0, 2]  # largest gradients among those not kept


def test_lottery_rewinds_the_survivors_to_their_initial_values(mnist_small):
    cfg = parse_config({"pruning": METHODS["lottery"]})
    method = steps.Runtime.build(cfg, data=mnist_small).method
    trained = {n: t + 0.01 for n, t in method.ctx.model.state_dict().items()}
    mask = full_mask(trained, prunable_names(trained))
    inputs = RoundInputs(encode(trained, mask, cfg.compression))  # what the clients started from
    weights, new_mask = method.server(
        trained, mask, round_=1, inputs=inputs
    )  # target 0 → 0.5: prune + rewind
    for name, keep in new_mask.items():
        assert torch.equal(weights[name][keep], method.initial[name][keep])
        assert not weights[name][~keep].any()
    targets = [schedule_for(cfg.pruning.schedule).target(r) for r in range(1, 6)]
    assert targets == [0.5, 0.75, 0.8, 0.8, 0.8]
    unchanged, kept = method.server(
        trained, new_mask, round_=4, inputs=inputs
    )  # target stays: no rewind
    assert unchanged is trained and kept is new_mask


@pytest.mark.parametrize("model_name", ["mlp", "lenet5", "cnn"])
def test_structured_pruning_really_shrinks_and_computes_the_same(model_name):
    torch.manual_seed(0)
    model = MODELS.get(model_name)((1, 28, 28), 10, MODELS[model_name].params())
    weights = {n: t.clone() for n, t in model.state_dict().items()}
    graph = ChannelGraph.of(model, (1, 28, 28))
    mask = structured_mask(
        graph,
        weights,
        full_mask(weights, prunable_names(weights, True, statistics=True)),
        sparsity=0.75,
    )
    apply_mask_(weights, mask)
    small = shrink(graph, weights, mask)
    model.load_state_dict(weights)
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-6)
    small_params = sum(p.numel() for p in small.parameters())
    nonzero = sum(int(t.count_nonzero()) for t in weights.values())
    assert small_params <= nonzero + 10  # every remaining parameter is one the mask kept
    assert small_params < 0.3 * sum(p.numel() for p in model.parameters())
    assert macs(small, (1, 28, 28)) < 0.5 * macs(model, (1, 28, 28))  # FLOPs really fall
    restored = expand_weights(slice_weights(weights, mask), mask, weights)
    assert all(torch.equal(restored[name], weights[name]) for name in weights)


def test_a_structured_run_publishes_its_model_in_the_shrunk_shape(make_config, mnist_small):
    cfg = make_config(pruning=METHODS["structured"])
    result = engine.run_experiment(cfg, data=mnist_small)
    folder = Path(result.location)
    shrunk = st_load((folder / SHRUNK).read_bytes())
    assert result.costs["stored_mb_shrunk"] * 1e6 == pytest.approx((folder / SHRUNK).stat().st_size)
    weights, mask = model_from_bytes((folder / "model.safetensors").read_bytes())
    assert sum(t.numel() for t in shrunk.values()) < 0.35 * sum(t.numel() for t in weights.values())
    method = steps.Runtime.build(cfg, data=mnist_small).method
    served = method.served(weights, mask)
    served.load_state_dict(shrunk, strict=True)  # no mask needed: the layers are smaller
    x = mnist_small.x_test[:32]
    full = method.ctx.model  # the dense layout, pruned channels at zero
    full.load_state_dict(weights)
    with torch.no_grad():
        torch.testing.assert_close(served(x), full(x), rtol=1e-5, atol=1e-5)


def test_an_unstructured_run_publishes_no_shrunk_model(make_config, mnist_small):
    result = engine.run_experiment(make_config(pruning=METHODS["dense"]), data=mnist_small)
    assert not (Path(result.location) / SHRUNK).exists()
    assert "stored_mb_shrunk" not in result.costs
