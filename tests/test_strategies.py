"""The robust rules and server optimisers: Flower's own test vectors where the rules overlap
(each client one float32 tensor of four equal values, 5 examples each), hand-computed cases for
what Flower has no test of, and what each rule does under pruning masks."""

import pytest
import torch

from fedprune.config import ConfigError, parse_config
from fedprune.records import GlobalModel
from fedprune.strategies import STRATEGIES, DecodedUpdate
from fedprune.strategies.robust import closest_mean


def rule(name: str, **settings):
    return STRATEGIES.get(name)(STRATEGIES[name].params(**settings))


def flower_clients(*values: float) -> list[DecodedUpdate]:
    """Flower's test setup: one float32 layer of 4 equal values per client, 5 examples."""
    return [DecodedUpdate({"layer": torch.full((4,), v)}, {}, 5) for v in values]


NO_START = GlobalModel({"layer": torch.zeros(4)}, {})


def only(model: GlobalModel) -> torch.Tensor:
    return model.weights["layer"]


def test_median_matches_flower_fedmedian():
    out = only(rule("median").aggregate(flower_clients(0.2, 1.0, 0.5), NO_START))
    assert torch.equal(out, torch.full((4,), 0.5))


def test_krum_matches_flower_krum():
    out = only(rule("krum", malicious=1).aggregate(flower_clients(0.2, 0.7, 1.0), NO_START))
    assert torch.equal(out, torch.full((4,), 0.7))


def test_multikrum_matches_flower_multikrum():
    chosen = rule("multikrum", malicious=1, keep=2)
    out = only(chosen.aggregate(flower_clients(0.2, 0.5, 1.0), NO_START))
    assert torch.allclose(out, torch.full((4,), 0.35))


def test_bulyan_matches_flower_bulyan():
    clients = flower_clients(0.2, 0.5, 0.7, 12.0, 0.1, 0.1)
    out = only(rule("bulyan", malicious=0).aggregate(clients, NO_START))
    assert torch.allclose(out, torch.full((4,), 2.2666667), rtol=0, atol=1e-7)


def test_closest_mean_matches_flowers_n_closest_weights():
    """Flower's test of Bulyan's last step (`_aggregate_n_closest_weights`, beta = 2)."""
    rows = [
        [1, 2, 1, 2, 3, 4],
        [1.1, 2.1, 1.1, 2.1, 3.1, 4.1],
        [1.2, 2.2, 1.2, 2.2, 3.2, 4.2],
        [1.3, 2.3, 0.9, 2.5, 3.4, 3.8],
    ]
    values = torch.tensor(rows, dtype=torch.float64)
    kept = torch.ones_like(values, dtype=torch.bool)
    center = torch.tensor([1, 2, 1, 2, 3, 4], dtype=torch.float64)
    out = closest_mean(values, kept, center, torch.full((6,), 2))
    assert torch.allclose(
        out, torch.tensor([1.05, 2.05, 0.95, 2.05, 3.05, 4.05], dtype=torch.float64)
    )


def test_trimmed_mean_cuts_beta_n_from_each_end():
    """Flower has no FedTrimmedAvg test; its rule cuts int(beta * n) per side, as here."""
    clients = flower_clients(0.1, 0.2, 0.3, 0.4, 100.0)  # beta 0.2 of 5: one cut per side
    out = only(rule("trimmed_mean").aggregate(clients, NO_START))
    assert torch.allclose(out, torch.full((4,), 0.3))
    assert torch.allclose(
        only(rule("trimmed_mean", beta=0.0).aggregate(clients, NO_START)),
        torch.full((4,), (0.1 + 0.2 + 0.3 + 0.4 + 100.0) / 5),
    )


def masked(values: list[float], keep: list[bool], n: int = 5) -> DecodedUpdate:
    return DecodedUpdate({"w": torch.tensor(values)}, {"w": torch.tensor(keep)}, n)


def test_robust_rules_combine_each_coordinate_over_the_clients_that_kept_it():
    """Three clients; coordinate 0 kept by all, 1 by two, 2 by one, 3 by none. A pruned
    client's zero never pulls a coordinate toward 0, and no client keeping it means pruned."""
    updates = [
        masked([1.0, 4.0, 0.0, 0.0], [True, True, False, False]),
        masked([2.0, 6.0, 0.0, 0.0], [True, True, False, False]),
        masked([9.0, 0.0, 7.0, 0.0], [True, False, True, False]),
    ]
    start = GlobalModel({"w": torch.zeros(4)}, {"w": torch.ones(4, dtype=torch.bool)})
    median = rule("median").aggregate(updates, start)
    assert median.weights["w"].tolist() == [2.0, 5.0, 7.0, 0.0]
    assert median.mask["w"].tolist() == [True, True, True, False]
    trimmed = rule("trimmed_mean", beta=0.34).aggregate(updates, start)  # cuts 1 of 3, 0 of 2
    assert trimmed.weights["w"].tolist() == [2.0, 5.0, 7.0, 0.0]
    bulyan = rule("bulyan", malicious=0).aggregate(updates, start)
    assert bulyan.weights["w"].tolist() == [4.0, 5.0, 7.0, 0.0]  # f = 0: the kept values' mean


def test_krum_distances_count_pruned_coordinates_as_zero():
    """An update that keeps almost nothing is far from the honest ones, not near all."""
    honest = [masked([1.0, 1.0, 1.0, 1.0 + d], [True] * 4) for d in (0.0, 0.1, 0.2, 0.3, 0.4)]
    empty = masked([0.0, 0.0, 0.0, 50.0], [False, False, False, True])
    start = GlobalModel({"w": torch.zeros(4)}, {"w": torch.ones(4, dtype=torch.bool)})
    chosen = rule("krum", malicious=1).aggregate([*honest, empty], start)
    assert chosen.mask["w"].all()
    assert chosen.weights["w"][3].item() < 2


def test_norm_clip_bounds_each_update_and_keeps_small_ones_exact():
    start = GlobalModel({"w": torch.ones(2)}, {"w": torch.ones(2, dtype=torch.bool)})
    small = masked([1.3, 1.4], [True, True])  # delta (0.3, 0.4): norm 0.5
    huge = masked([31.0, 41.0], [True, True])  # delta (30, 40): norm 50
    out = rule("norm_clip", bound=1.0).aggregate([small, huge], start).weights["w"]
    # huge is cut to norm 1: delta (0.6, 0.8); equal weights -> (1 + (0.3 + 0.6) / 2, ...)
    assert torch.allclose(out, torch.tensor([1.45, 1.6]))
    same = rule("norm_clip", bound=1.0).aggregate([small], start).weights["w"]
    assert torch.equal(same, small.weights["w"])


def test_norm_clip_leaves_integer_tensors_out_of_the_norm_and_as_sent():
    """A counter such as BatchNorm's num_batches_tracked is no weight to clip."""
    start = GlobalModel(
        {"w": torch.ones(2), "steps": torch.tensor(0)}, {"w": torch.ones(2, dtype=torch.bool)}
    )
    small = DecodedUpdate({"w": torch.tensor([1.3, 1.4]), "steps": torch.tensor(500)}, {"w": torch.ones(2, dtype=torch.bool)}, 5)  # fmt: skip
    huge = DecodedUpdate({"w": torch.tensor([31.0, 41.0]), "steps": torch.tensor(500)}, {"w": torch.ones(2, dtype=torch.bool)}, 5)  # fmt: skip
    out = rule("norm_clip", bound=1.0).aggregate([small, huge], start).weights
    assert torch.allclose(out["w"], torch.tensor([1.45, 1.6]))
    assert out["steps"].dtype == torch.int64 and out["steps"].item() == 500


def test_norm_clip_default_bound_is_the_median_norm():
    start = GlobalModel({"w": torch.zeros(1)}, {"w": torch.ones(1, dtype=torch.bool)})
    updates = [masked([v], [True]) for v in (1.0, 2.0, 3.0, -1000.0)]
    out = rule("norm_clip").aggregate(updates, start).weights["w"]
    # norms 1, 2, 3, 1000 -> lower median 2: (1 + 2 + 2 - 2) / 4
    assert torch.allclose(out, torch.tensor([0.75]))


def test_fedadam_matches_the_paper_update_and_carries_its_moments():
    """Reddi et al.'s Algorithm 2 by hand: m = 0.1Δ, v = 0.99τ² + 0.01Δ², x += η m/(√v+τ)."""
    start = GlobalModel({"w": torch.tensor([1.0, 1.0])}, {"w": torch.ones(2, dtype=torch.bool)})
    updates = [masked([1.5, 0.5], [True, True]), masked([1.5, 0.5], [True, True])]
    adam = rule("fedadam")
    first = adam.aggregate(updates, start)
    delta, tau = torch.tensor([0.5, -0.5]), 1e-3
    m = 0.1 * delta
    v = 0.99 * tau**2 + 0.01 * delta**2
    assert torch.allclose(first.weights["w"], 1 + 0.01 * m / (v.sqrt() + tau))
    assert torch.allclose(first.state["m.w"], m)
    assert torch.allclose(first.state["v.w"], v)
    second = adam.aggregate(updates, first)
    delta2 = torch.tensor([1.5, 0.5]) - first.weights["w"]
    m2 = 0.9 * m + 0.1 * delta2
    assert torch.allclose(second.state["m.w"], m2)


def test_server_optimisers_reset_moments_where_pruned_and_take_the_average_where_regrown():
    start = GlobalModel(
        {"w": torch.tensor([1.0, 0.0, 1.0])},
        {"w": torch.tensor([True, False, True])},  # coordinate 1 was pruned
        {"m.w": torch.tensor([0.3, 0.3, 0.3]), "v.w": torch.tensor([0.2, 0.2, 0.2])},
    )
    # coordinate 0 kept, 1 regrown by the client, 2 pruned by it
    updates = [masked([2.0, 0.7, 0.0], [True, True, False])]
    for name in ("fedadam", "fedyogi", "fedadagrad"):
        out = rule(name).aggregate(updates, start)
        assert out.mask["w"].tolist() == [True, True, False]
        assert out.weights["w"][1].item() == pytest.approx(0.7)  # regrown: the clients' average
        assert out.weights["w"][2].item() == 0.0
        assert out.state["m.w"][1:].tolist() == [0.0, 0.0]
        assert out.state["v.w"][1:].tolist() == pytest.approx([1e-6, 1e-6])
        assert out.state["m.w"][0].item() != 0.0
    momentum = rule("fedavgm").aggregate(updates, start)
    # m = 0.9·0.3 + Δ(1.0) = 1.27; x = 1 + 1.27
    assert momentum.weights["w"][0].item() == pytest.approx(2.27)


@pytest.mark.parametrize(
    ("aggregation", "clients", "message"),
    [
        ({"method": "bulyan", "malicious": 2}, 10, "4f \\+ 3 = 11"),
        ({"method": "krum", "malicious": 3}, 8, "2f \\+ 3 = 9"),
        ({"method": "multikrum", "malicious": 1, "keep": 9}, 8, "aggregation.keep"),
        ({"method": "trimmed_mean", "beta": 0.5}, 8, "beta"),
    ],
)
def test_settings_a_rule_cannot_work_with_are_refused(aggregation, clients, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"data": {"num_clients": clients}, "aggregation": aggregation})


def test_default_robust_settings_tolerate_a_fifth_of_the_round():
    for name in ("krum", "multikrum", "bulyan", "trimmed_mean", "median", "norm_clip"):
        parse_config({"data": {"num_clients": 20}, "aggregation": {"method": name}})


@pytest.mark.parametrize("name", sorted(STRATEGIES.names()))
def test_every_rule_keeps_an_integer_counter_an_integer(name):
    """BatchNorm's num_batches_tracked travels with the weights (ResNet-18, MobileNetV2)."""
    keep = {"w": torch.ones(2, dtype=torch.bool)}
    start = GlobalModel({"w": torch.ones(2), "steps": torch.tensor(0)}, keep)
    updates = [
        DecodedUpdate({"w": torch.tensor([1.0 + k, 2.0]), "steps": torch.tensor(500)}, keep, 5)
        for k in range(7)
    ]
    out = rule(name).aggregate(updates, start).weights
    assert out["steps"].dtype == torch.int64 and out["steps"].item() == 500
    assert out["w"].dtype == torch.float32
