import math

import pytest
import torch
from torch import nn

from fedprune.pruning.masks import apply_mask_, full_mask, magnitude_mask, prunable_names
from fedprune.tasks.models import MODELS, build_model
from fedprune.tasks.objectives import build_task
from fedprune.training.local import ClientConfig, evaluate, local_train
from fedprune.training.private import check_private_model, private_train

TASK = build_task()


def images(n: int = 256, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def separable(n: int, seed: int):
    """Two classes split by a fixed hyperplane in 20 features."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)
    direction = torch.ones(20) / math.sqrt(20)
    return x, (x @ direction > 0).long()


def pruned_model(name: str, input_shape: tuple[int, ...], sparsity: float):
    model = build_model(MODELS[name].params(), input_shape, 10, seed=0)
    weights = dict(model.named_parameters())
    mask = magnitude_mask(
        weights, full_mask(weights, prunable_names(weights)), sparsity, scope="layerwise"
    )
    apply_mask_(weights, mask)
    return model, mask


def train(model, mask, x, y, *, seed: int = 0, noise: float = 1.0, clip: float = 1.0, **cfg):
    return private_train(
        model,
        mask,
        x=x,
        y=y,
        cfg=ClientConfig(**cfg),
        generator=torch.Generator().manual_seed(seed),
        task=TASK,
        noise_multiplier=noise,
        clip=clip,
    )


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_pruned_weights_stay_exactly_zero_with_momentum_decay_and_prox():
    x, y = images(64)
    model, mask = pruned_model("lenet5", (1, 28, 28), 0.7)
    before = snapshot(model)
    revived = []  # checked at every forward, not only after the final re-masking

    def check(module: nn.Module, _) -> None:
        weights = dict(module.named_parameters())
        revived.extend(name for name, keep in mask.items() if weights[name][~keep].any())

    hook = model.register_forward_pre_hook(check)
    cfg = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3, "prox_mu": 0.1, "batch_size": 16}
    result = train(model, mask, x, y, epochs=2, **cfg)
    hook.remove()
    assert not revived
    assert result.steps == 8 and result.sample_rate == 0.25 and math.isfinite(result.loss)
    for name, param in model.named_parameters():
        if name in mask:
            assert torch.equal(param[~mask[name]], torch.zeros_like(param[~mask[name]]))
            assert not torch.equal(param[mask[name]], before[name][mask[name]])


def test_per_sample_clipping_bounds_a_step():
    """q = 1 (the whole client is one batch), no noise: the step is lr × the mean of the
    clipped per-sample gradients, whose norm is at most `clip`."""
    x, y = images(64)
    clip, lr = 1e-3, 1.0
    private, _ = pruned_model("mlp", (1, 28, 28), 0.0)
    plain, _ = pruned_model("mlp", (1, 28, 28), 0.0)
    before = snapshot(private)
    result = train(private, {}, x, y, noise=0.0, clip=clip, lr=lr, batch_size=64)
    assert result.steps == 1 and result.sample_rate == 1.0
    cfg = ClientConfig(lr=lr, batch_size=64)
    local_train(plain, {}, x=x, y=y, cfg=cfg, generator=torch.Generator(), task=TASK)

    def step_norm(model: nn.Module) -> float:
        changes = [p.detach() - before[n] for n, p in model.named_parameters()]
        return float(torch.cat([c.reshape(-1) for c in changes]).norm())

    assert 0 < step_norm(private) <= lr * clip * (1 + 1e-4)
    assert step_norm(plain) > 100 * lr * clip  # the clip did bind


def test_noise_std_is_lr_sigma_clip_over_expected_batch():
    """Zero inputs into a bias-free layer give zero gradients: the change is noise alone, of
    std lr·σ·C/B per step, B the *expected* batch size (not the sampled one)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(100, 100, bias=False))
    before = model[1].weight.detach().clone()
    x, y = torch.zeros(64, 100), torch.randint(0, 10, (64,))
    lr, sigma, clip = 0.01, 2.0, 0.5
    result = train(model, {}, x, y, noise=sigma, clip=clip, lr=lr, batch_size=32)
    assert result.steps == 2
    expected = lr * sigma * clip / 32 * math.sqrt(result.steps)
    empirical = float((model[1].weight.detach() - before).std())
    assert empirical == pytest.approx(expected, rel=0.05)


def test_same_seed_same_weights():
    x, y = images(128)
    runs = []
    for seed in (0, 0, 1):
        model, mask = pruned_model("lenet5", (1, 28, 28), 0.5)
        train(model, mask, x, y, seed=seed, momentum=0.9, batch_size=16)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_batchnorm_is_refused_by_name():
    tiny = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(10))
    x, y = images(32)
    with pytest.raises(ValueError, match=r"1 \(BatchNorm2d\).*cnn, mlp, lenet5"):
        train(tiny, {}, x, y)
    resnet = build_model(MODELS["resnet18"].params(), (3, 32, 32), 10, seed=0)
    with pytest.raises(ValueError, match=r"bn1 \(BatchNorm2d\).* and \d+ more"):
        check_private_model(resnet)


def test_model_comes_back_plain_and_trains_again():
    x, y = images(32)
    model, mask = pruned_model("cnn", (1, 28, 28), 0.5)
    keys = list(model.state_dict())
    for seed in (0, 1):  # the next client trains the same object
        train(model, mask, x, y, seed=seed, batch_size=16)
    assert list(model.state_dict()) == keys
    for module in model.modules():
        assert not (module._forward_hooks or module._backward_hooks or module._forward_pre_hooks)
        assert "activations" not in vars(module)
    assert all(not vars(p) and p.grad is None for p in model.parameters())
    assert evaluate(model, x, y, batch_size=64, task=TASK).metrics["accuracy"] >= 0.0


def test_learns_a_separable_task_under_noise():
    x, y = separable(1024, seed=0)
    x_test, y_test = separable(512, seed=1)
    model = build_model(MODELS["mlp"].params(hidden=32), (20,), 2, seed=0)
    result = train(model, {}, x, y, noise=1.0, clip=1.0, lr=0.5, epochs=3, batch_size=64)
    assert result.steps == 48
    assert evaluate(model, x_test, y_test, batch_size=256, task=TASK).metrics["accuracy"] > 0.85


def test_empty_batches_are_still_noised_steps():
    """q = 1/64 on 64 rows: about a third of the batches are empty; each is still a step."""
    model = nn.Sequential(nn.Linear(20, 2))
    x, y = separable(64, seed=0)
    before = snapshot(model)
    result = train(model, {}, x, y, batch_size=1)
    assert result.steps == 64 and math.isfinite(result.loss)
    assert not torch.equal(model[0].weight.detach(), before["0.weight"])


def test_char_lstm_trains_with_expanded_weights():
    """Opacus's hooks cannot take nn.LSTM; ExpandedWeights computes its per-sample gradients."""
    model = build_model(MODELS["char_lstm"].params(hidden=16), (12,), 30, seed=0)
    weights = dict(model.named_parameters())
    mask = magnitude_mask(
        weights, full_mask(weights, prunable_names(weights)), 0.5, scope="layerwise"
    )
    apply_mask_(weights, mask)
    keys = list(model.state_dict())
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 30, (64, 12), generator=g).float(), torch.randint(0, 30, (64,))
    result = train(model, mask, x, y, momentum=0.9, batch_size=16)
    assert result.steps == 4 and math.isfinite(result.loss)
    assert list(model.state_dict()) == keys
    for name, keep in mask.items():
        assert not weights[name][~keep].any()


class FirstLayerLSTM(nn.Module):
    """An LSTM fed the raw input (no gradient needed there: oneDNN's path on the CPU)."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 8, batch_first=True)
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.lstm(x)[0][:, -1])


def test_recurrent_per_sample_clipping_bounds_a_step():
    torch.manual_seed(0)
    model = FirstLayerLSTM()
    before = snapshot(model)
    x, y = torch.randn(32, 5, 3), torch.randint(0, 2, (32,))
    train(model, {}, x, y, noise=0.0, clip=1e-3, lr=1.0, batch_size=32)
    changes = [p.detach() - before[n] for n, p in model.named_parameters()]
    assert 0 < float(torch.cat([c.reshape(-1) for c in changes]).norm()) <= 1e-3 * (1 + 1e-4)
