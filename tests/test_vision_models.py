"""ResNet-18 and MobileNetV2: their small-input adaptation, structured pruning through
BatchNorm, residual adds and depthwise convs, unstructured masks, and one short FL run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedprune.engine import local as engine
from fedprune.pruning.channels import (
    ChannelGraph,
    expand_weights,
    macs,
    shrink,
    slice_weights,
    structured_mask,
)
from fedprune.pruning.masks import apply_mask_, full_mask, magnitude_mask, prunable_names
from fedprune.tasks.datasets.idx import load_dataset
from fedprune.tasks.models import MODELS

NAMES = ["resnet18", "mobilenet_v2"]
SHAPES = [(1, 28, 28), (3, 32, 32)]


def _build(name: str, shape: tuple[int, ...], classes: int = 10, **params) -> nn.Module:
    torch.manual_seed(0)
    return MODELS.get(name)(shape, classes, MODELS[name].params(**params))


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", NAMES)
def test_the_models_take_small_images_of_any_channel_count(name, shape):
    model = _build(name, shape)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, *shape)).shape == (2, 10)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == shape[0] and first.stride == (1, 1)
    assert first.kernel_size == (3, 3)


def test_unadapted_they_are_torchvisions_published_imagenet_models():
    resnet = _build("resnet18", (3, 224, 224), 1000, stem="imagenet")
    assert _count(resnet) == 11_689_512
    mobilenet = _build("mobilenet_v2", (3, 224, 224), 1000)
    assert _count(mobilenet) == 3_504_872  # the stem's stride changes no parameter
    assert mobilenet.features[0][0].stride == (2, 2)  # above 64 px: as published


def _with_running_statistics(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """Non-trivial BatchNorm statistics, so that they matter in eval mode."""
    with torch.no_grad():
        model.train()(torch.randn(8, *shape))
    return model.eval()


@pytest.mark.parametrize("name", NAMES)
def test_structured_half_shrinks_and_computes_what_the_masked_model_does(name):
    shape = (3, 32, 32)
    model = _with_running_statistics(_build(name, shape), shape)
    weights = {n: t.clone() for n, t in model.state_dict().items()}
    graph = ChannelGraph.of(model, shape)
    mask = structured_mask(
        graph,
        weights,
        full_mask(weights, prunable_names(weights, True, statistics=True)),
        sparsity=0.5,
    )
    norms = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert any(not bool(mask[f"{n}.running_var"].all()) for n in norms)  # BN is masked too
    apply_mask_(weights, mask)
    small = shrink(graph, weights, mask).eval()
    model.load_state_dict(weights)
    x = torch.randn(4, *shape)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-4, atol=1e-5)
    assert _count(small) < 0.55 * _count(model)
    assert macs(small, shape) < 0.6 * macs(model, shape)
    restored = expand_weights(slice_weights(weights, mask), mask, weights)
    assert all(torch.equal(restored[n], weights[n]) for n in weights)


@pytest.mark.parametrize("name", NAMES)
def test_an_unstructured_mask_zeroes_that_share_of_conv_and_linear_weights(name):
    model = _build(name, (1, 28, 28))
    weights = {n: t.clone() for n, t in model.state_dict().items()}
    names = prunable_names(weights)
    kinds = nn.Conv2d | nn.Linear
    layers = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, kinds)}
    assert set(names) == layers  # kernels and matrices; BatchNorm and biases stay dense
    mask = magnitude_mask(weights, full_mask(weights, names), 0.8, scope="global")
    apply_mask_(weights, mask)
    total = sum(weights[n].numel() for n in names)
    zeros = sum(int((weights[n] == 0).sum()) for n in names)
    assert zeros / total == pytest.approx(0.8, abs=1e-4)


def test_a_short_structured_resnet_run_reaches_its_sparsity(make_config):
    data = load_dataset("mnist", train_subset=100, test_subset=100)
    cfg = make_config(
        rounds=2,  # round 2's clients train the shrunk model with BatchNorm
        data={"num_clients": 2, "train_subset": 100, "test_subset": 100},
        client={"epochs": 1, "batch_size": 50},
        model={"name": "resnet18"},
        pruning={"method": "structured", "schedule": {"kind": "oneshot", "target": 0.5}},
    )
    result = engine.run_experiment(cfg, data=data)
    assert [m.sparsity for m in result.history] == pytest.approx([0.5, 0.5], abs=0.01)
    assert all(m.train_loss == m.train_loss and m.test_loss == m.test_loss for m in result.history)
