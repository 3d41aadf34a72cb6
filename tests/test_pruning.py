import pytest
import torch

from fedprune.pruning.masks import (
    apply_mask_,
    full_mask,
    magnitude_mask,
    measure_sparsity,
    prunable_names,
)
from fedprune.pruning.schedules import SCHEDULES
from fedprune.pruning.schedules.gradual import Gradual
from fedprune.pruning.schedules.oneshot import OneShot


def random_weights(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {
        "a.weight": torch.randn(30, 20, generator=g),
        "a.bias": torch.randn(30, generator=g),
        "b.weight": torch.randn(10, 30, generator=g) * 5,
    }


def test_biases_are_not_prunable_by_default():
    weights = random_weights()
    assert prunable_names(weights) == ["a.weight", "b.weight"]
    assert prunable_names(weights, include_bias_and_norm=True) == list(weights)


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.8, 0.95])
def test_global_pruning_keeps_exactly_the_largest(sparsity):
    weights = random_weights()
    mask = magnitude_mask(
        weights, full_mask(weights, ["a.weight", "b.weight"]), sparsity, scope="global"
    )
    kept = torch.cat([weights[n][mask[n]].abs() for n in mask])
    dropped = torch.cat([weights[n][~mask[n]].abs() for n in mask])
    total = sum(m.numel() for m in mask.values())
    assert len(dropped) == round(sparsity * total)
    assert kept.min() > dropped.max()


def test_layerwise_pruning_hits_target_in_every_layer():
    weights = random_weights()
    mask = magnitude_mask(
        weights, full_mask(weights, ["a.weight", "b.weight"]), 0.7, scope="layerwise"
    )
    for name, keep in mask.items():
        assert (~keep).sum() == round(0.7 * keep.numel())
        assert weights[name][keep].abs().min() > weights[name][~keep].abs().max()


def test_global_pruning_prunes_small_scale_layer_more():
    weights = random_weights()
    mask = magnitude_mask(
        weights, full_mask(weights, ["a.weight", "b.weight"]), 0.5, scope="global"
    )
    assert (~mask["a.weight"]).float().mean() > (~mask["b.weight"]).float().mean()


def test_pruning_never_revives_a_pruned_weight():
    weights = random_weights()
    names = ["a.weight", "b.weight"]
    first = magnitude_mask(weights, full_mask(weights, names), 0.5, scope="global")
    grown = {n: w.clone() for n, w in weights.items()}
    grown["a.weight"][~first["a.weight"]] = 100.0  # large, but already pruned
    second = magnitude_mask(grown, first, 0.6, scope="global")
    for name in names:
        assert not (second[name] & ~first[name]).any()
    assert measure_sparsity(grown, second).sparsity == pytest.approx(0.6, abs=1e-3)


def test_apply_mask_and_measure():
    weights = random_weights()
    mask = magnitude_mask(
        weights, full_mask(weights, ["a.weight", "b.weight"]), 0.8, scope="global"
    )
    apply_mask_(weights, mask)
    report = measure_sparsity(weights, mask)
    assert report.sparsity == pytest.approx(0.8, abs=1e-3)
    assert report.total == 30 * 20 + 30 + 10 * 30
    assert report.nonzero == report.total - round(0.8 * 900)


def test_gradual_schedule_follows_zhu_gupta():
    schedule = Gradual(SCHEDULES["gradual"].params(target=0.9, start_round=2, end_round=6))
    targets = [schedule.target(r) for r in range(1, 9)]
    assert targets[0] == 0.0 and targets[1] == 0.0
    assert targets[5:] == [0.9, 0.9, 0.9]
    assert all(a < b for a, b in zip(targets[1:6], targets[2:6], strict=False))
    assert targets[2] == pytest.approx(0.9 * (1 - (1 - 1 / 4) ** 3))


def test_oneshot_schedule():
    schedule = OneShot(SCHEDULES["oneshot"].params(target=0.8, at_round=3))
    assert [schedule.target(r) for r in (1, 2, 3, 4)] == [0.0, 0.0, 0.8, 0.8]


def test_running_statistics_are_pruned_only_with_their_channel():
    weights = {
        "conv.weight": torch.randn(4, 1, 3, 3),
        "bn.weight": torch.ones(4),
        "bn.running_mean": torch.zeros(4),
        "bn.running_var": torch.ones(4),
        "bn.num_batches_tracked": torch.tensor(3),
    }
    assert prunable_names(weights, include_bias_and_norm=True) == ["conv.weight", "bn.weight"]
    assert prunable_names(weights, True, statistics=True) == list(weights)[:4]
