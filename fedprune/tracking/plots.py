"""Run plots: accuracy per round, and accuracy against cumulative MB uploaded (the
communication/accuracy trade-off pruning is for)."""

from __future__ import annotations

from itertools import accumulate
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fedprune.records import RoundMetrics  # noqa: E402


def plot_lines(
    lines: dict[str, tuple[list[float], list[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    path: Path,
) -> Path:
    """One figure, one line per entry (label → x, y); a legend only when there are several."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (x, y) in lines.items():
        ax.plot(x, y, marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(lines) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_run(history: list[RoundMetrics], folder: Path, title: str) -> list[Path]:
    cumulative_mb = [b / 1e6 for b in accumulate(m.bytes_up for m in history)]
    tested = [(m, mb) for m, mb in zip(history, cumulative_mb, strict=True) if m.tested]
    rounds = [float(m.round) for m, _ in tested]
    accuracy = [100 * m.test_accuracy for m, _ in tested]
    uploaded = [mb for _, mb in tested]
    return [
        plot_lines(
            {title: (x, accuracy)},
            xlabel=label,
            ylabel="test accuracy (%)",
            title=title,
            path=folder / name,
        )
        for name, x, label in (
            ("accuracy_vs_round.png", rounds, "round"),
            ("accuracy_vs_mb_uploaded.png", uploaded, "cumulative MB uploaded"),
        )
    ]
