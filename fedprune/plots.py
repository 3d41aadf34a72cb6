"""Run plots: accuracy per round, and accuracy against cumulative MB uploaded (the
communication/accuracy trade-off pruning is for)."""

from __future__ import annotations

from itertools import accumulate
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fedprune.steps import RoundMetrics  # noqa: E402


def plot_run(history: list[RoundMetrics], folder: Path, title: str) -> list[Path]:
    rounds = [m.round for m in history]
    accuracy = [100 * m.test_accuracy for m in history]
    uploaded = [b / 1e6 for b in accumulate(m.bytes_up for m in history)]
    paths = []
    for name, x, label in (
        ("accuracy_vs_round.png", rounds, "round"),
        ("accuracy_vs_mb_uploaded.png", uploaded, "cumulative MB uploaded"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(x, accuracy, marker="o")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = folder / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
