"""Plot properties read back from the figures: whole-number round ticks, accuracy in %, one
colour per method across plots, the legend outside the data, the method in the title."""

from __future__ import annotations

from matplotlib.figure import Figure

from fedprune.records import RoundMetrics
from fedprune.tracking.plots import colour_of, draw_lines, plot_run


def metrics(round_: int, accuracy: float, bytes_up: int) -> RoundMetrics:
    zero = dict.fromkeys(("test_loss", "train_loss", "sparsity", "target_sparsity", "seconds"), 0.0)  # fmt: skip
    counts = dict.fromkeys(("nonzero_params", "total_params", "bytes_down"), 0)
    return RoundMetrics(round_, **zero, **counts, bytes_up=bytes_up, test={"accuracy": accuracy})


def axes(figure: Figure):
    (ax,) = figure.axes
    figure.canvas.draw()
    return ax


def test_rounds_have_whole_number_ticks_and_the_legend_sits_outside_the_data():
    lines = {"run a": ([1.0, 2.0, 3.0], [50.0, 70.0, 80.0]), "run b": ([1.0, 2.0, 3.0], [40.0, 60.0, 75.0])}  # fmt: skip
    figure = draw_lines(
        lines, xlabel="round", ylabel="test accuracy (%)", title="t", integer_x=True
    )
    ax = axes(figure)
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 > ax.get_window_extent().x1, "the legend covers no line"


def test_a_method_has_one_colour_in_every_plot():
    first = axes(draw_lines({"x": ([0.0, 1.0], [1.0, 2.0]), "y": ([0.0, 1.0], [2.0, 3.0])},
                            xlabel="", ylabel="", title="", methods={"x": "feddst", "y": "magnitude"}))  # fmt: skip
    second = axes(draw_lines({"z": ([0.0, 1.0], [1.0, 2.0])}, xlabel="", ylabel="", title="",
                             methods={"z": "magnitude"}))  # fmt: skip
    colours = {line.get_label(): line.get_color() for ax in (first, second) for line in ax.lines}
    assert colours["y"] == colours["z"] == colour_of("magnitude") != colours["x"]


def test_run_plots_show_accuracy_in_percent_and_the_method_in_the_title(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr("fedprune.tracking.plots.draw_lines", _keep(draw_lines, drawn))
    history = [metrics(1, 0.5, 1000), metrics(2, 0.75, 2000)]
    title = "mnist (1a2b3c4d): magnitude-server-gradual to 90%"
    paths = plot_run(history, tmp_path, title, main="accuracy", method="magnitude-server-gradual")
    assert [p.name for p in paths] == ["accuracy_vs_round.png", "accuracy_vs_mb_uploaded.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    for figure in drawn:
        ax = axes(figure)
        assert ax.get_title() == title and ax.get_ylabel() == "test accuracy (%)"
        (line,) = ax.lines
        assert list(line.get_ydata()) == [50.0, 75.0]
        assert line.get_color() == colour_of("magnitude-server-gradual")
    assert list(axes(drawn[1]).lines[0].get_xdata()) == [0.001, 0.003], "cumulative MB"


def _keep(draw, drawn: list):
    def keeping(*args, **kwargs):
        figure = draw(*args, **kwargs)
        drawn.append(figure)
        return figure

    return keeping
