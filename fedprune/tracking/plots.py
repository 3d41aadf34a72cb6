"""Run plots: the main metric (accuracy, RMSE, …) per round, and against cumulative MB
uploaded (the communication/accuracy trade-off pruning is for)."""

from __future__ import annotations

import zlib
from itertools import accumulate
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from fedprune.records import RoundMetrics  # noqa: E402

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def colour_of(method: str) -> tuple[float, ...]:
    """The same colour for a method in every plot, of every run and every `compare`."""
    return plt.get_cmap("tab10")(zlib.crc32(method.encode()) % 10)


def draw_lines(
    lines: dict[str, tuple[list[float], list[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    methods: dict[str, str] | None = None,
    integer_x: bool = False,
) -> Figure:
    """One figure, one line per entry (label → x, y), coloured by its method (`methods`:
    label → method; runs of one method differ by marker), a legend outside the data when
    there are several, whole-number ticks on an `integer_x` axis (rounds)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (label, (x, y)) in enumerate(lines.items()):
        method = (methods or {}).get(label, label)
        ax.plot(x, y, marker=MARKERS[i % len(MARKERS)], label=label, color=colour_of(method))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(lines) > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)
    fig.tight_layout()
    return fig


def plot_lines(lines: dict[str, tuple[list[float], list[float]]], *, path: Path, **how) -> Path:
    """`draw_lines` into a PNG at `path` (the legend included, outside the axes)."""
    fig = draw_lines(lines, **how)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_run(
    history: list[RoundMetrics], folder: Path, title: str, *, main: str, method: str
) -> list[Path]:
    """The task's main metric (`main`, e.g. accuracy, in %) per round and against cumulative
    MB uploaded, in `method`'s colour; a line per site for the sites that hold a test set of
    their own."""
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
        return {("server test set" if sites else method): (x, values), **own}

    return [
        plot_lines(
            lines(x),
            xlabel=label,
            ylabel=f"test {main}{unit}",
            title=title,
            methods={"server test set": method, method: method},
            integer_x=label == "round",
            path=folder / name,
        )
        for name, x, label in (
            (f"{main}_vs_round.png", rounds, "round"),
            (f"{main}_vs_mb_uploaded.png", uploaded, "cumulative MB uploaded"),
        )
    ]
