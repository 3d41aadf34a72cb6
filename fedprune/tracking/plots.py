"""Run plots: the main metric (accuracy, RMSE, …) per round, and against cumulative MB
uploaded (the communication/accuracy trade-off pruning is for)."""

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


def plot_run(history: list[RoundMetrics], folder: Path, title: str, *, main: str) -> list[Path]:
    """The task's main metric (`main`, e.g. accuracy) per round and against cumulative MB
    uploaded; a line per site for the sites that hold a test set of their own."""
    cumulative_mb = [b / 1e6 for b in accumulate(m.bytes_up for m in history)]
    tested = [(m, mb) for m, mb in zip(history, cumulative_mb, strict=True) if m.tested]
    rounds = [float(m.round) for m, _ in tested]
    scale, unit = (100.0, " (%)") if main == "accuracy" else (1.0, "")
    values = [scale * m.test[main] for m, _ in tested]
    uploaded = [mb for _, mb in tested]
    sites = sorted({site for m, _ in tested for site in m.site_test})

    def lines(x: list[float]) -> dict[str, tuple[list[float], list[float]]]:
        """The server's test set, and each site's own where sites hold one."""
        own = {f"site {s}": (x, [scale * m.site_test[s][main] for m, _ in tested]) for s in sites}
        return {("server test set" if sites else title): (x, values), **own}

    return [
        plot_lines(
            lines(x),
            xlabel=label,
            ylabel=f"test {main}{unit}",
            title=title,
            path=folder / name,
        )
        for name, x, label in (
            (f"{main}_vs_round.png", rounds, "round"),
            (f"{main}_vs_mb_uploaded.png", uploaded, "cumulative MB uploaded"),
        )
    ]
