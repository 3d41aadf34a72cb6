"""LotteryFL's client-side helpers: each client's held-out validation rows and the accuracy
of its own model on its own label mix."""

from __future__ import annotations

import torch
from torch import nn

from fedprune.pruning.masks import Weights
from fedprune.records import seed_for
from fedprune.tasks.datasets import FederatedData
from fedprune.tasks.objectives import build_task
from fedprune.training.local import evaluate

ACCURACY = build_task()
"""Classification: LotteryFL scores by accuracy (the config allows it with no other task)."""


def validation_split(
    rows: torch.Tensor, *, client: int, share: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A client's training rows and its held-out validation rows (`share` of them, at least
    one), the same every round."""
    order = torch.randperm(
        len(rows), generator=torch.Generator().manual_seed(seed_for(seed, client))
    )
    held = max(1, round(share * len(rows)))
    return rows[order[held:]], rows[order[:held]]


def accuracy_on(
    model: nn.Module, weights: Weights, *, data: FederatedData, rows: torch.Tensor, batch_size: int
) -> float:
    """Accuracy of `weights` on training rows `rows` (a client's validation rows)."""
    model.load_state_dict(weights)
    x, y = data.x_train[rows], data.y_train[rows]
    return evaluate(model, x, y, batch_size=batch_size, task=ACCURACY).metrics["accuracy"]


def personal_accuracy(
    model: nn.Module, *, rows: torch.Tensor, data: FederatedData, batch_size: int
) -> float:
    """Test accuracy of a client's model on the client's own label mix (LotteryFL tests each
    client on local test data drawn like its training data)."""
    x, y = data.x_test, data.y_test
    per_class = evaluate(model, x, y, batch_size=batch_size, task=ACCURACY).per_class
    assert per_class is not None
    return mix_accuracy(per_class, data.y_train[rows])


def mix_accuracy(per_class: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy on a label mix: the per-class test accuracies weighted by each class's share
    of `labels` (a class the test set lacks cannot be scored and is left out)."""
    mix = torch.bincount(labels, minlength=len(per_class)).double()[: len(per_class)]
    tested = ~per_class.isnan()
    return float((per_class[tested] * mix[tested]).sum() / mix[tested].sum())
