"""Differential privacy: DP-FedAvg's clipping and noise, the accountant against Opacus called
directly, the budget's stop, and the refusals of what cannot hold."""

import math
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from opacus.accountants import PRVAccountant, RDPAccountant

from fedprune.cli import main
from fedprune.config import ConfigError, parse_config
from fedprune.engine import local as engine
from fedprune.io.store import model_from_bytes
from fedprune.privacy.accounting import (
    Composition,
    calibrate,
    epsilon,
    rounds_within,
    worst_epsilon,
)
from fedprune.privacy.central import change, clipped_model, clipped_sum, noised_model
from fedprune.records import GlobalModel
from fedprune.strategies import DecodedUpdate

CENTRAL = {"mechanism": "central", "noise_multiplier": 1.0, "clip": 0.5}
POISSON = {"fraction": 0.5, "poisson": True}


def norm(delta: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().square().sum()) for t in delta.values()))


def test_a_clients_change_is_clipped_to_the_bound_and_keeps_its_zeros():
    start = {"w": torch.ones(100), "b": torch.zeros(3), "count": torch.tensor(7)}
    mask = {"w": torch.arange(100) % 2 == 0}
    far = {"w": torch.full((100,), 11.0) * mask["w"], "b": torch.ones(3), "count": torch.tensor(9)}
    clipped = clipped_model(far, start, mask, clip=0.5)
    assert norm(change(clipped, start, mask)) == pytest.approx(0.5, rel=1e-6)
    assert (clipped["w"][~mask["w"]] == 0).all(), "pruned coordinates stay zero"
    assert clipped["count"] == 9, "integer tensors as trained"
    near = {"w": (start["w"] + 1e-3) * mask["w"], "b": torch.zeros(3), "count": torch.tensor(7)}
    same = clipped_model(near, start, mask, clip=0.5)
    assert torch.equal(same["w"], near["w"]), "a change within the bound is left as it is"


def test_the_noised_average_is_the_clipped_sum_over_q_n_plus_noise_of_sigma_clip():
    size = 200_000
    mask = torch.ones(size, dtype=torch.bool)
    mask[: size // 4] = False
    previous = GlobalModel({"w": torch.where(mask, 1.0, 0.0), "n": torch.tensor(3)}, {"w": mask})
    moved = [torch.where(mask, 1.0 + step, 0.0) for step in (0.001, 10.0)]  # small, huge
    updates = [DecodedUpdate({"w": w, "n": torch.tensor(5)}, {"w": mask}, 50) for w in moved]
    settings = {"clip": 2.0, "expected_clients": 4.0}
    total, within = clipped_sum(updates, previous, clip=2.0)
    assert within == 1, "the small change was within the clip, the huge one not"
    quiet = noised_model(
        total, previous, noise_multiplier=0.0, generator=torch.Generator(), **settings
    )
    kept = size - size // 4
    huge = 2.0 / math.sqrt(kept)  # the huge change, clipped to norm 2, per coordinate
    expected = 1.0 + (0.001 + huge) / 4.0  # every client weighs the same: ÷ q·N, not samples
    assert quiet.weights["w"][mask] == pytest.approx(torch.full((kept,), expected), rel=1e-5)
    assert (quiet.weights["w"][~mask] == 0).all() and quiet.weights["n"] == 3
    noisy = noised_model(
        total, previous, noise_multiplier=1.5, generator=torch.Generator().manual_seed(0),
        **settings,
    )  # fmt: skip
    noise = (noisy.weights["w"] - quiet.weights["w"])[mask]
    assert float(noise.std()) == pytest.approx(1.5 * 2.0 / 4.0, rel=0.01), "σ·clip / q·N"
    assert abs(float(noise.mean())) < 0.01
    assert (noisy.weights["w"][~mask] == 0).all(), "no noise on pruned coordinates"
    assert torch.equal(noisy.mask["w"], mask), "the mask is the previous (public) one"


@pytest.mark.parametrize("name", ["rdp", "prv"])
def test_epsilon_is_opacus_accountant_called_directly(name):
    step = Composition(noise_multiplier=1.1, sample_rate=0.05, steps=3)
    direct = RDPAccountant() if name == "rdp" else PRVAccountant()
    for _ in range(40 * 3):
        direct.step(noise_multiplier=1.1, sample_rate=0.05)
    ours = epsilon(step, 40, delta=1e-5, accountant=name)
    assert ours <= direct.get_epsilon(delta=1e-5) + 1e-9, "ours searches more Rényi orders"
    assert ours == pytest.approx(
        direct.get_epsilon(delta=1e-5), rel=0.02 if name == "rdp" else 1e-6
    )


def test_calibration_meets_the_target_and_no_less_noise_would():
    costs = [Composition(1.0, 0.02, 30), Composition(1.0, 0.1, 6)]  # two shard sizes
    sigma = calibrate(costs, 3.0, rounds=20, delta=1e-5, accountant="rdp")
    noised = [Composition(sigma, c.sample_rate, c.steps) for c in costs]
    assert worst_epsilon(noised, 20, delta=1e-5) <= 3.0
    weaker = [Composition(0.95 * sigma, c.sample_rate, c.steps) for c in costs]
    assert worst_epsilon(weaker, 20, delta=1e-5) > 3.0
    allowed = rounds_within(noised, 3.0, rounds=100, delta=1e-5, accountant="rdp")
    assert allowed >= 20 and worst_epsilon(noised, allowed + 1, delta=1e-5) > 3.0


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"privacy": CENTRAL}, "Poisson sampling"),
        ({"privacy": CENTRAL, "sampling": POISSON, "aggregation": {"method": "median"}}, "needs each client's update"),
        ({"privacy": {**CENTRAL, "secure_aggregation": True}, "sampling": POISSON, "aggregation": {"method": "krum"}}, "needs each client's update"),
        ({"privacy": {"secure_aggregation": True}, "aggregation": {"outlier_norm": 3}}, "aggregation.outlier_norm"),
        ({"privacy": {**CENTRAL, "noise_multiplier": 0, "target_epsilon": 1}, "sampling": POISSON}, "noise_multiplier 0"),
        ({"privacy": {**CENTRAL, "target_epsilon": 0.05}, "sampling": POISSON}, "cannot be met"),
        ({"privacy": {"mechanism": "local"}, "pruning": {"method": "feddst"}}, "pruning method 'feddst'"),
        ({"privacy": {"mechanism": "local"}, "client": {"vectorize": True}}, "client.vectorize"),
        ({"privacy": {"target_epsilon": 2}}, "needs a mechanism"),
        ({"sampling": {"count": 2, "poisson": True}}, "sampling.poisson needs sampling.fraction"),
    ],
)  # fmt: skip
def test_what_cannot_hold_is_refused_with_the_reason(settings, says):
    with pytest.raises(ConfigError, match=says):
        parse_config(settings)


def test_central_dp_run_logs_the_accountants_epsilon_and_keeps_pruned_weights_zero(
    make_config, mnist_small
):
    cfg = make_config(
        rounds=3,
        data={"num_clients": 8},
        model={"name": "mlp"},
        sampling=POISSON,
        privacy={**CENTRAL, "noise_multiplier": 0.01, "clip": 5.0},
        client={"lr": 0.1},
        pruning={"schedule": {"kind": "oneshot", "target": 0.5, "at_round": 1}},
    )
    result = engine.run_experiment(cfg, data=mnist_small)
    step = Composition(0.01, 0.5, 1)
    spent = [epsilon(step, r, delta=1e-5) for r in (1, 2, 3)]
    assert [m.epsilon for m in result.history] == pytest.approx(spent)
    assert spent[0] < spent[1] < spent[2]
    logged = MlflowClient(cfg.tracking).get_metric_history(result.run_id, "epsilon")
    logged = sorted(logged, key=lambda p: p.step)
    assert [p.step for p in logged] == [1, 2, 3]
    assert [p.value for p in logged] == pytest.approx(spent)
    assert all(0 <= m.clients <= 8 for m in result.history)
    weights, mask = model_from_bytes(Path(result.location, "model.safetensors").read_bytes())
    assert all((weights[n][~m] == 0).all() for n, m in mask.items())
    assert result.history[-1].sparsity == pytest.approx(0.5, abs=1e-3)
    assert result.history[-1].test["accuracy"] > 0.6, "clipped and (slightly) noised, it learns"


def test_target_epsilon_stops_the_run_before_the_budget_is_spent(make_config, mnist_small):
    step = Composition(1.0, 0.5, 1)
    target = (epsilon(step, 2, delta=1e-5) + epsilon(step, 3, delta=1e-5)) / 2  # 2 rounds fit
    cfg = make_config(
        rounds=5,
        data={"num_clients": 4},
        model={"name": "mlp"},
        sampling=POISSON,
        privacy={**CENTRAL, "noise_multiplier": 1.0, "target_epsilon": target},
        pruning={"schedule": {"kind": "none"}},
    )
    result = engine.run_experiment(cfg, data=mnist_small)
    assert [m.round for m in result.history] == [1, 2]
    assert result.history[-1].epsilon <= target
    run = MlflowClient(cfg.tracking).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["privacy.stopped_after"] == "2"
    weights, _ = model_from_bytes(Path(result.location, "model.safetensors").read_bytes())
    assert weights, "the final model is published"


def test_poisson_rounds_with_no_client_still_finish(make_config, mnist_small):
    cfg = make_config(
        rounds=6,
        data={"num_clients": 4},
        model={"name": "mlp"},
        sampling={"fraction": 0.1, "poisson": True},
    )
    result = engine.run_experiment(cfg, data=mnist_small)
    counts = [m.clients for m in result.history]
    assert len(counts) == 6 and 0 in counts, counts  # seed 0: some rounds draw nobody
    empty = [m for m in result.history if m.clients == 0]
    assert all(m.bytes_up == 0 and math.isnan(m.train_loss) for m in empty)


def test_calibrate_prints_the_noise_that_meets_the_target(make_config, tmp_path, capsys):
    import yaml

    cfg = make_config(rounds=50, sampling={"fraction": 0.1, "poisson": True}, privacy=CENTRAL)
    path = tmp_path / "dp.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump()))
    assert main(["privacy", "calibrate", str(path), "--epsilon", "2"]) == 0
    out = capsys.readouterr().out
    sigma = calibrate([Composition(1.0, 0.1, 1)], 2.0, rounds=50, delta=1e-5, accountant="rdp")
    assert f"noise_multiplier ≥ {sigma:.4g} keeps ε ≤ 2.0" in out
    assert f"{epsilon(Composition(1.0, 0.1, 1), 50, delta=1e-5):.3g}" in out
    assert main(["privacy", "calibrate", str(path)]) == 2, "no target anywhere: exit 2"


def masked_clients(count: int, size: int = 5000) -> tuple[list[DecodedUpdate], GlobalModel]:
    """Clients with masks of their own (client-side pruning) and different sample counts."""
    generator = torch.Generator().manual_seed(1)
    updates = []
    for client in range(count):
        keep = torch.rand(size, generator=generator) > 0.3
        weights = {
            "w": torch.randn(size, generator=generator) * keep,
            "b": torch.randn(7, generator=generator),
            "n": torch.tensor(10 + client),
        }
        updates.append(DecodedUpdate(weights, {"w": keep}, 20 + 13 * client))
    previous = GlobalModel(
        {"w": torch.zeros(size), "b": torch.zeros(7), "n": torch.tensor(10)},
        {"w": torch.ones(size, dtype=torch.bool)},
    )
    return updates, previous


@pytest.mark.parametrize("dropped", [frozenset(), frozenset({1}), frozenset({0, 3})])
@pytest.mark.parametrize("method", ["mask_aware", "fedavg"])
def test_secure_aggregation_gives_the_plain_rules_average_with_and_without_dropouts(
    method, dropped
):
    from fedprune.privacy.secure.aggregate import secure_average
    from fedprune.strategies import STRATEGIES

    updates, previous = masked_clients(6)
    rule = STRATEGIES.get(method)
    average, cost = secure_average(
        updates, previous, mask_aware=rule.mask_aware, threshold=0.6, round_=3, dropped=dropped
    )
    survivors = [u for i, u in enumerate(updates) if i not in dropped]
    plain = rule(STRATEGIES[method].params()).aggregate(survivors, previous)
    ours = rule(STRATEGIES[method].params()).aggregate([average], previous)
    assert cost.survivors == len(survivors)
    assert torch.equal(ours.mask["w"], plain.mask["w"])
    for name in ("w", "b"):
        assert torch.allclose(ours.weights[name], plain.weights[name], atol=1e-6, rtol=0)
    assert cost.bytes_up > 8 * (5000 * 2 + 7 + 2) * len(survivors), "dense masked vectors"


def test_secure_aggregation_needs_enough_survivors_and_two_clients():
    from fedprune.privacy.secure.aggregate import secure_average

    updates, previous = masked_clients(5)
    with pytest.raises(Exception, match="threshold|survivors|fewer"):
        secure_average(updates, previous, mask_aware=True, threshold=0.8, round_=1, dropped={0, 1})
    with pytest.raises(ValueError, match="at least 2 clients"):
        secure_average(updates[:1], previous, mask_aware=True, threshold=0.6, round_=1)


def test_a_secure_run_ends_with_the_plain_runs_model_within_fixed_point_error(
    make_config, mnist_small
):
    settings = {
        "rounds": 2,
        "model": {"name": "mlp"},
        "pruning": {"schedule": {"kind": "oneshot", "target": 0.5}},
    }
    plain = engine.run_experiment(make_config(**settings), data=mnist_small)
    secure_cfg = make_config(**settings, privacy={"secure_aggregation": True})
    secure = engine.run_experiment(secure_cfg, data=mnist_small)
    ours, _ = model_from_bytes(Path(secure.location, "model.safetensors").read_bytes())
    theirs, _ = model_from_bytes(Path(plain.location, "model.safetensors").read_bytes())
    assert max(float((ours[n] - theirs[n]).abs().max()) for n in ours) < 1e-4
    for s, p in zip(secure.history, plain.history, strict=True):
        assert s.bytes_up > p.bytes_up, "masked vectors are dense fixed-point"
        assert s.secure_seconds > 0 and math.isnan(p.secure_seconds)


def test_central_dp_with_secure_aggregation_runs(make_config, mnist_small):
    cfg = make_config(
        rounds=2,
        data={"num_clients": 16},  # a round of fewer than 2 (p = 2.6e-4) would fail
        model={"name": "mlp"},
        sampling=POISSON,
        privacy={**CENTRAL, "secure_aggregation": True},
    )
    result = engine.run_experiment(cfg, data=mnist_small)
    assert [m.round for m in result.history] == [1, 2]
    assert result.history[-1].epsilon == pytest.approx(
        epsilon(Composition(1.0, 0.5, 1), 2, delta=1e-5)
    )


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"privacy": {"secure_aggregation": True}}, "local engine only"),
        (
            {"privacy": {**CENTRAL, "target_epsilon": 4}, "sampling": POISSON},
            "allows 1 of the 3 rounds",
        ),
        ({"privacy": {"mechanism": "local", "target_epsilon": 50}}, "before the data is split"),
    ],
)
def test_the_pipeline_refuses_what_it_cannot_run_yet(make_config, settings, says):
    from pipelines.federated_pruning import build_pipeline

    with pytest.raises(ConfigError, match=says):
        build_pipeline(make_config(**settings), local=True)


def test_local_dp_run_logs_the_worst_clients_epsilon_and_prints_it(make_config, tmp_path, capsys):
    import yaml

    cfg = make_config(
        rounds=2,
        data={"num_clients": 4, "train_subset": 1200, "test_subset": 500},
        model={"name": "mlp"},
        privacy={"mechanism": "local", "noise_multiplier": 1.0, "clip": 1.0},
        pruning={"schedule": {"kind": "oneshot", "target": 0.5}},
    )
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump()))
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("round |"))
    assert header.endswith("| ε")
    (run,) = MlflowClient(cfg.tracking).search_runs(
        [MlflowClient(cfg.tracking).get_experiment_by_name(cfg.experiment).experiment_id]
    )
    logged = sorted(
        MlflowClient(cfg.tracking).get_metric_history(run.info.run_id, "epsilon"),
        key=lambda p: p.step,
    )
    rows = [300] * 4  # 1,200 rows, iid over 4 clients
    step = Composition(1.0, 32 / rows[0], math.ceil(rows[0] / 32))
    assert [p.value for p in logged] == pytest.approx(
        [epsilon(step, r, delta=1e-5) for r in (1, 2)]
    )
    assert f"privacy: ε = {logged[-1].value:.3g} at δ = 1e-05 (local DP" in out


def test_local_dp_refuses_a_batchnorm_model_before_any_run(make_config, mnist_small):
    cfg = make_config(model={"name": "resnet18"}, privacy={"mechanism": "local"})
    with pytest.raises(Exception, match="BatchNorm"):
        engine.run_experiment(cfg, data=mnist_small)


def test_a_poisson_pipeline_has_client_pods_for_the_largest_plausible_draw(make_config, tmp_path):
    from fedprune.privacy.config import pipeline_problem
    from pipelines.federated_pruning import compile_pipeline, group_count

    cfg = make_config(
        rounds=2,
        data={"num_clients": 6000},
        sampling={"fraction": 0.05, "poisson": True},
        privacy=CENTRAL,
        kubeflow={"clients_per_pod": 50, "image": "registry.test/fedprune:1"},
    )
    assert cfg.most_clients_per_round() == 406, "binomial(6000, 0.05)'s 1 − 1e-9 quantile"
    assert group_count(cfg) == 9
    cfg = cfg.model_copy(update={"privacy": cfg.privacy.model_copy(update={"target_epsilon": 50})})
    assert pipeline_problem(cfg) is None, "a target the rounds stay within compiles"
    assert compile_pipeline(cfg, tmp_path / "dp.yaml").stat().st_size > 0


def test_adaptive_clipping_moves_the_clip_towards_the_quantile_and_keeps_the_budget():
    from fedprune.privacy.central import changes_noise, next_clip

    quiet = torch.Generator().manual_seed(0)
    settings = {"expected_clients": 100, "lr": 0.2, "count_noise": 1e-12, "generator": quiet}
    assert next_clip(2.0, 100, quantile=0.5, **settings) == pytest.approx(2.0 * math.exp(-0.1))
    assert next_clip(2.0, 0, quantile=0.5, **settings) == pytest.approx(2.0 * math.exp(0.1))
    assert next_clip(2.0, 50, quantile=0.5, **settings) == pytest.approx(2.0)
    sigma = changes_noise(1.0, count_noise=5.0)  # 1/σ_Δ² + 1/(2·5)² = 1/1²: Andrew et al.
    assert sigma**-2 + (2 * 5.0) ** -2 == pytest.approx(1.0) and sigma > 1.0
    with pytest.raises(ConfigError, match="clip_count_noise 0.2 must exceed"):
        parse_config({"privacy": {**CENTRAL, "clip_quantile": 0.5}, "sampling": POISSON, "data": {"num_clients": 8}})  # fmt: skip
    with pytest.raises(ConfigError, match="secure aggregation hides"):
        parse_config({"privacy": {**CENTRAL, "clip_quantile": 0.5, "secure_aggregation": True}, "sampling": POISSON})  # fmt: skip


def test_an_adaptive_clip_shrinks_from_a_loose_start_round_by_round(make_config, mnist_small):
    cfg = make_config(
        rounds=3,
        data={"num_clients": 40},
        sampling=POISSON,
        model={"name": "mlp"},
        privacy={**CENTRAL, "noise_multiplier": 0.05, "clip": 20.0, "clip_quantile": 0.5},
        pruning={"schedule": {"kind": "none"}},
    )
    result = engine.run_experiment(cfg, data=mnist_small)
    clips = [m.clip for m in result.history]
    # Every change is far below the clip, so all a round drew are within it: the clip moves by
    # exp(−0.2 · (drawn / q·N − 0.5)), up to the count's noise (std 20/20 = 1 client of 20).
    starts = [20.0, *clips[:-1]]
    for metrics, start, clip in zip(result.history, starts, clips, strict=True):
        expected = start * math.exp(-0.2 * (metrics.clients / 20 - 0.5))
        assert clip == pytest.approx(expected, rel=0.04), (metrics.clients, clips)
    assert clips[0] > clips[1] > clips[2], clips
    assert result.history[-1].epsilon == pytest.approx(
        epsilon(Composition(0.05, 0.5, 1), 3, delta=1e-5)
    ), "the count's noise is inside the budget"
    logged = MlflowClient(cfg.tracking).get_metric_history(result.run_id, "clip")
    assert sorted(p.step for p in logged) == [1, 2, 3]
