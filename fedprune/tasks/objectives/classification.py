"""Classification: cross-entropy over the model's logits; accuracy (main), macro-F1, and
ROC AUC for two classes (the positive class is label 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedprune.tasks.objectives.base import TASKS, Tally, Task


class ConfusionTally(Tally):
    def __init__(self, classes: int):
        self.classes = classes
        self.confusion = torch.zeros(classes * classes, dtype=torch.int64)
        self.scores: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def add(self, outputs: torch.Tensor, target: torch.Tensor) -> None:
        predicted = outputs.argmax(1)
        self.confusion += torch.bincount(
            target * self.classes + predicted, minlength=self.classes**2
        )
        if self.classes == 2:  # AUC ranks the scores: they are kept (one float a sample)
            self.scores.append(torch.softmax(outputs.float(), 1)[:, 1])
            self.targets.append(target)

    def _matrix(self) -> torch.Tensor:
        return self.confusion.view(self.classes, self.classes).double()

    def per_class(self) -> torch.Tensor:
        matrix = self._matrix()
        return matrix.diagonal() / matrix.sum(1)

    def metrics(self) -> dict[str, float]:
        matrix = self._matrix()
        hits, actual, predicted = matrix.diagonal(), matrix.sum(1), matrix.sum(0)
        f1 = 2 * hits / (actual + predicted)  # NaN for a class never seen nor predicted
        present = actual > 0
        out = {
            "accuracy": float(hits.sum() / matrix.sum()),
            "macro_f1": float(f1[present].nan_to_num(0.0).mean()),
        }
        if self.classes == 2:
            targets = torch.cat(self.targets)
            if 0 < int(targets.sum()) < len(targets):  # AUC needs both classes
                from sklearn.metrics import roc_auc_score

                out["roc_auc"] = float(
                    roc_auc_score(targets.numpy(), torch.cat(self.scores).numpy())
                )
        return out


@TASKS.register("classification")
class Classification(Task):
    main = "accuracy"
    higher_is_better = True
    label_dtype = torch.int64

    def loss(self, outputs: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean"):
        return F.cross_entropy(outputs, target, reduction=reduction)

    def tally(self, outputs: int) -> ConfusionTally:
        return ConfusionTally(outputs)

    def check_labels(self, labels: torch.Tensor, outputs: int) -> str | None:
        if labels.dtype != torch.int64 or labels.dim() != 1:
            return f"classification needs one integer label per sample, got {labels.dtype} {tuple(labels.shape)}"
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= outputs):
            return (
                f"labels range over {int(labels.min())}…{int(labels.max())}, outside the "
                f"{outputs} classes 0…{outputs - 1}"
            )
        return None
