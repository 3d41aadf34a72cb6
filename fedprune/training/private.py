"""Sample-level differential privacy on each client: DP-SGD (Abadi et al. 2016, arXiv 1607.00133)
through Opacus.

Every step draws a Poisson batch (each row kept with probability q), clips each sample's
gradient to `clip` and adds Gaussian noise of std noise_multiplier·clip to their sum, so one
client's training is (ε, δ)-DP with respect to any one of its rows; an accountant turns
(noise_multiplier, sample_rate, steps) into ε for a chosen δ.
"""

from __future__ import annotations

import math
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from opacus import GradSampleModule
from opacus.grad_sample.gsm_base import AbstractGradSampleModule
from opacus.grad_sample.gsm_exp_weights import GradSampleModuleExpandedWeights
from opacus.optimizers import DPOptimizer
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from opacus.validators import ModuleValidator
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fedprune.pruning.masks import Mask, apply_mask_
from fedprune.tasks.objectives import Task
from fedprune.training.local import ClientConfig, _with_zeros


@dataclass(frozen=True)
class PrivateResult:
    loss: float
    """Mean loss over the non-empty batches."""
    steps: int
    """Noised optimizer steps (empty batches included): the accountant's step count."""
    sample_rate: float
    """q = expected batch size / rows: the accountant's sampling rate."""


def check_private_model(model: nn.Module) -> None:
    """Raise a ValueError if per-sample gradients of `model` are not private or not computable:
    BatchNorm mixes the samples of a batch (and keeps their statistics), and the other layers
    Opacus's validator rejects. Recurrent layers (char_lstm's nn.LSTM) are accepted: Opacus's
    hooks cannot take them, so `private_train` computes their per-sample gradients with
    ExpandedWeights instead."""
    offending = [
        f"{name or 'model'} ({type(module).__name__})"
        for name, module in model.named_modules()
        if _rejected(module)
    ]
    if offending:
        named = ", ".join(offending[:3]) + (
            f" and {len(offending) - 3} more" if offending[3:] else ""
        )
        raise ValueError(
            f"differential privacy (DP-SGD) cannot train {named}: BatchNorm makes a sample's "
            "gradient depend on the rest of its batch (and Opacus rejects the other layers "
            "named). Use a model without BatchNorm (cnn, mlp, lenet5, char_lstm) or with GroupNorm."
        )


def _rejected(module: nn.Module) -> bool:
    """BatchNorm even without parameters (Opacus checks only trainable layers); otherwise
    Opacus's validator for this layer alone, so that the error can name it."""
    if isinstance(module, _BatchNorm):
        return True
    validate = ModuleValidator.VALIDATORS.get(type(module))
    return validate is not None and not isinstance(module, nn.RNNBase) and bool(validate(module))


def private_train(
    model: nn.Module,
    mask: Mask,
    *,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: ClientConfig,
    generator: torch.Generator,
    task: Task,
    noise_multiplier: float,
    clip: float,
) -> PrivateResult:
    """Train `model` in place with masked DP-SGD for cfg.epochs × ⌈rows / batch⌉ steps.

    Batches and noise both come from `generator`: a seeded one reproduces a run, but the
    guarantee needs one nobody can regenerate (`privacy.central.secret_generator`). The noised
    gradient is masked before each step, so pruned weights stay exactly zero; momentum, weight
    decay and FedProx's gradient act on the noised gradient (post-processing: no extra privacy
    cost). `model` comes back as it went in: same object, parameter names, no Opacus hooks or
    attributes."""
    if noise_multiplier < 0 or clip <= 0 or not len(y):
        raise ValueError(
            f"need noise_multiplier >= 0, clip > 0 and rows: {noise_multiplier}, {clip}, {len(y)}"
        )
    check_private_model(model)
    rows = len(y)
    expected = min(cfg.batch_size, rows)
    sample_rate = expected / rows
    steps = cfg.epochs * math.ceil(rows / expected)  # as `privacy.accounting.round_costs`
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    pruned = _with_zeros(mask)  # an all-kept tensor needs no masking
    anchor = {n: p.detach().clone() for n, p in params.items()} if cfg.prox_mu else {}
    model.train()
    recurrent = any(isinstance(module, nn.RNNBase) for module in model.modules())
    sampled: AbstractGradSampleModule = (
        GradSampleModuleExpandedWeights(model) if recurrent else GradSampleModule(model)
    )
    optimizer = DPOptimizer(
        torch.optim.SGD(
            params.values(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        ),
        noise_multiplier=noise_multiplier,
        max_grad_norm=clip,
        expected_batch_size=expected,  # the noised sum is divided by it
        generator=generator,
    )
    batches = UniformWithReplacementSampler(
        num_samples=rows, sample_rate=sample_rate, generator=generator, steps=steps
    )
    total, nonempty = 0.0, 0
    try:
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            if batch:
                with _without_onednn() if recurrent else nullcontext():
                    outputs = sampled(x[batch])
                loss = task.loss(outputs, y[batch])
                with warnings.catch_warnings():  # the first layer's input needs no gradient:
                    warnings.filterwarnings("ignore", "Full backward hook is firing")  # harmless
                    loss.backward()
                total += loss.item()
                nonempty += 1
            else:  # as in Opacus: a zero sum, still noised (the accountant counts the step)
                for p in params.values():
                    p.grad_sample = p.new_zeros((0, *p.shape))
            optimizer.pre_step()  # clip per sample, sum, add noise, divide by the expected size
            for name, param in params.items():
                if cfg.prox_mu:  # gradient of (μ/2)·||w − w_global||²: data-independent
                    param.grad.add_(param.detach() - anchor[name], alpha=cfg.prox_mu)
                if name in pruned:  # so SGD (momentum, weight decay) never revives them
                    param.grad.mul_(pruned[name])
            optimizer.original_optimizer.step()
    finally:
        optimizer.zero_grad(set_to_none=True)
        sampled.to_standard_module()  # removes hooks and per-sample attributes, but not:
        for p in params.values():
            p.__dict__.pop("summed_grad", None)  # DPOptimizer's
        for module in model.modules():
            module.__dict__.pop("activations", None)  # the hooks' (empty after a backward)
            module.__dict__.pop("max_batch_len", None)
    apply_mask_(params, pruned)
    return PrivateResult(loss=total / max(nonempty, 1), steps=steps, sample_rate=sample_rate)


def _without_onednn() -> AbstractContextManager[None]:
    """ExpandedWeights decomposes recurrent layers into per-step ops, except on the oneDNN CPU
    path (taken when the layer's input needs no gradient), which it cannot handle."""
    return torch.backends.mkldnn.flags(
        enabled=False, deterministic=None, allow_tf32=None, fp32_precision=None
    )
