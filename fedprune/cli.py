"""`fedprune` command line: run, validate, compare, data fetch, privacy calibrate (and the
Kubeflow commands)."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedprune.config import ExperimentConfig, load_config
from fedprune.console import console, fit_output
from fedprune.errors import RunInterrupted, UserError, raise_on_signals, signal_of
from fedprune.kubeflow_cli import add_kubeflow_commands
from fedprune.privacy.cli import add_privacy_commands
from fedprune.pruning.methods import METHODS
from fedprune.tasks.datasets import fetchable
from fedprune.tasks.objectives import TASKS

if TYPE_CHECKING:
    from fedprune.records import RoundMetrics

EXIT_BAD_INPUT = 2


def round_table(main: str, private: bool = False) -> Table:
    """A row per round; with differential privacy an ε column (spent so far)."""
    table = Table(title="rounds", show_edge=False)
    metric = "acc %" if main == "accuracy" else main
    columns = ["round", metric, "loss", "sparsity %", "MB up", "MB down", "rejected", "s"]
    for column in columns + (["ε"] if private else []):
        table.add_column(column, justify="right")
    return table


def shown(main: str, value: float) -> str:
    """A task's main metric as the table shows it: accuracy in percent, others as they are."""
    return f"{100 * value:.2f}" if main == "accuracy" else f"{value:.4g}"


class LiveProgress:
    """On a terminal: a bar over all client trainings of the run, above a table that grows by
    one row a round (the task's main metric, `main`, in its second column). In a pipe or a
    log: the table's header once, then one line per round, nothing redrawn."""

    def __init__(self, main: str, private: bool = False) -> None:
        self.main, self.private = main, private
        self.table = round_table(main, private)
        self.bar = Progress(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        )
        self.live = Live(Group(self.table, self.bar), console=console, refresh_per_second=4)
        self.redraw = console.is_terminal

    def start(self, rounds: int, clients_per_round: int) -> None:
        self.task = self.bar.add_task("clients", total=rounds * clients_per_round)
        if self.redraw:
            self.live.start()
        else:
            console.print(" | ".join(c.header for c in self.table.columns), highlight=False)

    def client_done(self, count: int = 1) -> None:
        self.bar.advance(self.task, count)

    def round_done(self, m: RoundMetrics) -> None:
        row = (
            str(m.round),
            shown(self.main, m.test[self.main]) if m.tested else "-",
            f"{m.test_loss:.4f}" if m.tested else "-",
            f"{100 * m.sparsity:.1f}",
            f"{m.bytes_up / 1e6:.2f}",
            f"{m.bytes_down / 1e6:.2f}",
            str(m.rejected_updates),
            f"{m.seconds:.1f}",
        ) + ((f"{m.epsilon:.3g}",) if self.private else ())
        self.table.add_row(*row)
        if not self.redraw:
            console.print(" | ".join(row), highlight=False)

    def stop(self) -> None:
        if self.redraw:
            self.live.stop()


def cmd_run(args: argparse.Namespace) -> int:
    from fedprune.engine.local import run_experiment

    cfg = load_config(args.config)
    main = TASKS.get(cfg.task.kind).main
    view = LiveProgress(main, cfg.privacy.private)
    try:
        result = run_experiment(cfg, progress=view, resume=args.resume, run_name=args.run_name)
    finally:
        view.stop()
    last = result.history[-1]
    uploaded = sum(m.bytes_up for m in result.history) / 1e6
    downloaded = sum(m.bytes_down for m in result.history) / 1e6
    seconds = sum(m.seconds for m in result.history)
    console.print(
        f"\n[bold green]done[/] {len(result.history)} rounds in {seconds:.1f} s: "
        f"test {main} {shown(main, last.test[main])}{'%' if main == 'accuracy' else ''}, sparsity {100 * last.sparsity:.1f}% "
        f"({last.nonzero_params:,} of {last.total_params:,} parameters non-zero), "
        f"{uploaded:.2f} MB uploaded, {downloaded:.2f} MB downloaded"
    )
    if cfg.privacy.private:
        stopped = len(result.history) < cfg.rounds
        console.print(
            f"privacy: ε = {last.epsilon:.3g} at δ = {cfg.privacy.delta} "
            f"({cfg.privacy.mechanism} DP, {cfg.privacy.accountant} accountant)"
            + (
                f"; privacy.target_epsilon stopped the run after round {last.round}"
                if stopped
                else ""
            )
        )
    if not math.isnan(last.personal_accuracy):
        console.print(
            f"personal models (LotteryFL): test accuracy {100 * last.personal_accuracy:.2f}% "
            f"on each client's label mix, mean sparsity {100 * last.personal_sparsity:.1f}% "
            "(the global model's sparsity is that of their union)"
        )
    costs = result.costs
    console.print(
        f"inference: {costs['macs'] / 1e6:.2f} M MACs per sample as it runs "
        f"(dense {costs['macs_dense'] / 1e6:.2f} M, "
        f"with sparse kernels {costs['macs_sparse_kernels'] / 1e6:.2f} M)"
    )
    if "personal_macs_sparse_kernels" in costs:
        console.print(
            f"personal models: {costs['personal_macs_sparse_kernels'] / 1e6:.2f} M MACs per "
            "sample with sparse kernels, on average"
        )
    console.print(
        f"final model: {costs['stored_mb']:.2f} MB stored (kept values and mask bits; "
        f"{costs['stored_mb_dense']:.2f} MB with dense tensors)"
    )
    if "stored_mb_shrunk" in costs:
        console.print(f"shrunk model: {costs['stored_mb_shrunk']:.2f} MB (channels removed)")
    console.print(f"artifacts: {result.location}")
    console.print(f"MLflow run {result.run_id}: {result.ui_hint}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    checked = check_data(cfg)
    target = getattr(cfg.pruning.schedule, "target", 0.0)  # schedule `none` has none
    console.print(
        f"{args.config}: valid — experiment '{cfg.experiment}', {cfg.rounds} rounds, "
        f"{cfg.data.num_clients} clients ({cfg.clients_per_round()} per round), "
        f"model {cfg.model.name}, pruning {METHODS.get(cfg.pruning.method).tag(cfg.pruning)}"
        + (f" to {100 * target:.0f}%" if target else "")
    )
    console.print(checked, highlight=False)
    return 0


def check_data(cfg: ExperimentConfig) -> str:
    """Split the data set as a run would, where it can be read here, so a partition the data
    cannot satisfy fails at `validate`; data kept elsewhere (a cluster's volume, the sites)
    is said to be unchecked, not an error."""
    from fedprune.steps.runtime import load_data, partition_data
    from fedprune.tasks.datasets import DataError

    if cfg.kubeflow.sites:
        return "data: kept at the sites, checked by their pods (not here)"
    try:
        data = load_data(cfg)
    except DataError as error:
        return f"data: not checked here ({str(error).splitlines()[0]})"
    shards = partition_data(data, cfg)
    smallest = min(len(rows) for rows in shards)
    return f"data: {len(data.y_train):,} training rows, smallest client {smallest:,}"


def cmd_compare(args: argparse.Namespace) -> int:
    from fedprune.tracking.compare import summarise
    from fedprune.tracking.plots import plot_lines

    check_tracking_exists(args.tracking)
    if args.plot is not None:
        check_plot_path(args.plot)
    found = summarise(
        args.tracking, experiment=args.experiment, metric=args.metric, target=args.target
    )
    runs, metric = found.runs, found.metric
    percent = metric.endswith("accuracy")
    title = args.experiment or "all experiments"
    table = Table(title=f"{title}: runs by final {metric}", show_edge=False)
    unit = " %" if percent else ""

    def value(v: float) -> str:
        return f"{100 * v:.2f}" if percent else f"{v:.4g}"

    reach = f"rounds to {args.target:g}" if args.target is not None else "rounds to target"
    columns = ("run", "method", "target sparsity", "reached sparsity", f"final{unit}",
               f"best{unit}", "MB up", reach, "rounds s")  # fmt: skip
    for column in columns:
        justify = "left" if column in ("run", "method") else "right"
        # Only the method name may fold onto a second line when the terminal is narrow.
        table.add_column(column, justify=justify, no_wrap=column != "method", overflow="fold")
    for r in runs:
        table.add_row(
            r.run_id[:8],
            r.method,
            "-" if math.isnan(r.target_sparsity) else f"{100 * r.target_sparsity:.0f}%",
            f"{100 * r.sparsity:.1f}%",
            value(r.final),
            value(r.best),
            f"{r.mb_uploaded:.2f}",
            "-" if r.rounds_to_target is None else str(r.rounds_to_target),
            f"{r.rounds_s:.1f}",
        )
    console.print(table)
    if args.plot is not None:
        labels = {r.run_id: f"{r.run_id[:8]} {r.method} {r.sparsity:.0%}" for r in runs}
        plot_lines(
            {
                labels[r.run_id]: (r.cumulative_mb, [(100 if percent else 1) * v for v in r.curve])
                for r in runs
            },  # fmt: skip
            xlabel="cumulative MB uploaded",
            ylabel=metric + (" (%)" if percent else ""),
            title=f"{title}: {metric} against MB uploaded",
            methods={labels[r.run_id]: r.method for r in runs},
            path=args.plot,
        )
        console.print(f"plot: {args.plot}")
    return 0


def check_plot_path(path: Path) -> None:
    """`--plot` names a PNG file to write, in a folder that exists."""
    from fedprune.io.store import folder_problem

    if path.is_dir():
        raise UserError(f"--plot: {path} is a folder; name the PNG file to write")
    if path.suffix.lower() != ".png":
        raise UserError(f"--plot: {path} is not a .png file name (e.g. compare.png)")
    if problem := folder_problem(path.parent):
        raise UserError(f"--plot: cannot write {path}: {problem}")
    if not path.parent.is_dir():
        raise UserError(f"--plot: folder {path.parent} does not exist")


def check_tracking_exists(uri: str) -> None:
    """`compare` reads what it is pointed at: a SQLite file that is not there is an error,
    never a new empty database in the current folder."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise UserError(
            f"--tracking: no MLflow database at {uri.removeprefix('sqlite:///')} (run from "
            "the folder of your runs, or pass --tracking / set MLFLOW_TRACKING_URI)"
        )


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from fedprune.tasks.datasets import fetch

    with console.status(f"fetching {args.name}"):
        folder = fetch(args.name)
    console.print(f"{args.name}: ready in {folder}")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="fedprune", description="Federated learning with model pruning."
    )
    root.add_argument("--version", action="version", version=f"fedprune {version('fedprune')}")
    sub = root.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment with the local engine")
    run.add_argument("config", type=Path, help="the experiment's YAML config")
    run.add_argument(
        "--resume", metavar="RUN_ID", help="continue this run from its last published round"
    )
    run.add_argument(
        "--run-name", help="the MLflow run's name (default: method, target and short run id)"
    )
    run.set_defaults(handler=cmd_run)
    validate = sub.add_parser("validate", help="check a config file without running it")
    validate.add_argument("config", type=Path, help="the experiment's YAML config")
    validate.set_defaults(handler=cmd_validate)
    compare = sub.add_parser("compare", help="table and plot of finished runs from MLflow")
    compare.add_argument("--experiment", help="only this experiment (default: all)")
    compare.add_argument("--metric", help="default: the runs' main metric (their task's)")
    compare.add_argument(
        "--target", type=float, help="count the rounds until the metric reaches this"
    )
    compare.add_argument(
        "--tracking",
        default=os.environ.get("MLFLOW_TRACKING_URI", ExperimentConfig().tracking),
        help="MLflow URI (default: $MLFLOW_TRACKING_URI, else the embedded database)",
    )
    compare.add_argument(
        "--plot", type=Path, help="also draw the metric against MB uploaded into this PNG"
    )
    compare.set_defaults(handler=cmd_compare)
    data = sub.add_parser("data", help="data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch_cmd = data_sub.add_parser("fetch", help="obtain a data set into $FEDPRUNE_DATA")
    fetch_cmd.add_argument("name", choices=fetchable(), help="the data set")
    fetch_cmd.set_defaults(handler=cmd_data_fetch)
    add_kubeflow_commands(sub)
    add_privacy_commands(sub)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if "" not in sys.path and os.getcwd() not in sys.path:
        # Import paths in a config (models, data sets, callbacks) resolve from the current
        # folder, as with `python -m`, and from PYTHONPATH.
        sys.path.insert(0, os.getcwd())
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its DB-migration chatter
    logging.getLogger("alembic").setLevel(logging.WARNING)
    raise_on_signals()
    fit_output()
    try:
        return args.handler(args)
    except UserError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False)
        return EXIT_BAD_INPUT
    except RunInterrupted as error:
        console.print(f"[bold yellow]interrupted:[/] {error}", highlight=False)
        return error.exit_code
    except KeyboardInterrupt as error:  # before a run started, or outside one: nothing to keep
        number = signal_of(error)
        console.print(f"[bold yellow]interrupted[/] by {signal.Signals(number).name}")
        return 128 + number


if __name__ == "__main__":
    sys.exit(main())
