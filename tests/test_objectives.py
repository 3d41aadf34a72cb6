"""The tasks' metrics agree with scikit-learn's, batch by batch as the server tallies them."""

import math

import pytest
import torch
from sklearn.metrics import f1_score, mean_absolute_error, mean_squared_error, roc_auc_score

from fedprune.config import ConfigError, parse_config
from fedprune.tasks.objectives import TASKS, build_task
from fedprune.training.local import evaluate


class Fixed(torch.nn.Module):
    """Returns the outputs it was given, row by row (its input is the row index)."""

    def __init__(self, outputs: torch.Tensor):
        super().__init__()
        self.outputs = torch.nn.Parameter(outputs, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs[x.long().view(-1)]


def scored(outputs: torch.Tensor, y: torch.Tensor, kind: str):
    rows = torch.arange(len(y)).float().unsqueeze(1)
    task = build_task(TASKS[kind].params())
    return evaluate(Fixed(outputs), rows, y, batch_size=7, task=task)


@pytest.mark.parametrize("classes", [2, 5])
def test_classification_metrics_match_scikit_learn(classes):
    generator = torch.Generator().manual_seed(classes)
    logits = torch.randn(101, classes, generator=generator)
    y = torch.randint(0, classes, (101,), generator=generator)
    result = scored(logits, y, "classification")
    predicted = logits.argmax(1).numpy()
    assert result.metrics["accuracy"] == pytest.approx(
        float((logits.argmax(1) == y).float().mean())
    )
    assert result.metrics["macro_f1"] == pytest.approx(f1_score(y, predicted, average="macro"))
    assert result.loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)))
    if classes == 2:
        assert result.metrics["roc_auc"] == pytest.approx(roc_auc_score(y, logits.softmax(1)[:, 1]))
    else:
        assert "roc_auc" not in result.metrics


def test_regression_metrics_match_scikit_learn():
    generator = torch.Generator().manual_seed(0)
    outputs = torch.randn(50, 1, generator=generator)
    y = torch.randn(50, generator=generator)
    result = scored(outputs, y, "regression")
    assert result.metrics["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, outputs[:, 0])))
    assert result.metrics["mae"] == pytest.approx(mean_absolute_error(y, outputs[:, 0]))
    assert result.loss == pytest.approx(mean_squared_error(y, outputs[:, 0]), rel=1e-6)


def test_task_is_named_in_the_config_and_checked():
    assert parse_config({"task": "regression"}).task.kind == "regression"
    with pytest.raises(
        ConfigError,
        match=r"task.kind: unknown 'ranking'; registered: 'classification', 'regression'",
    ):
        parse_config({"task": "ranking"})
    with pytest.raises(ConfigError, match="task must be classification"):
        parse_config(
            {
                "task": "regression",
                "pruning": {
                    "method": "lottery",
                    "personal": True,
                    "schedule": {"kind": "iterative", "target": 0.5},
                },
            }
        )


def test_labels_are_checked_against_the_model_outputs():
    classify = build_task()
    assert "outside the 3 classes" in classify.check_labels(torch.tensor([0, 3]), 3)
    assert classify.check_labels(torch.tensor([0, 2]), 3) is None
    regress = build_task(TASKS["regression"].params())
    assert "1 target(s) per sample but the model has 10 outputs" in regress.check_labels(
        torch.zeros(4), 10
    )
