"""`fedprune compile | submit | schedule`: the Kubeflow side of the command line.

`pipelines/` (which needs kfp) is imported inside each handler, so the core and the local
commands never load kfp.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedprune.config import load_config
from fedprune.errors import UserError

console = Console()
SCHEDULE_ACTIONS = ("list", "pause", "delete")


def cmd_compile(args: argparse.Namespace) -> int:
    import time

    from pipelines.federated_pruning import compile_pipeline, group_count

    cfg = load_config(args.config)
    started = time.perf_counter()
    path = compile_pipeline(cfg, args.output)
    console.print(
        f"compiled {path} in {time.perf_counter() - started:.1f} s: {cfg.rounds} rounds × "
        f"{group_count(cfg)} client groups of ≤ {cfg.kubeflow.clients_per_pod}"
    )
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from pipelines.submit import submit

    cfg = load_config(args.config)
    run = submit(
        cfg,
        args.host,
        experiment=args.experiment,
        namespace=args.namespace,
        run_name=args.run_name,
    )
    console.print(f"submitted run {run.id}\n{run.url}")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from pipelines import submit as kf

    if args.target in SCHEDULE_ACTIONS:
        if args.target == "list":
            table = Table("id", "name", "status", "cron")
            for row in kf.list_schedules(args.host, args.namespace):
                table.add_row(row["id"], row["name"], row["status"], row["cron"])
            console.print(table)
            return 0
        if not args.recurring_run_id:
            raise UserError(f"fedprune schedule {args.target} needs a recurring run id")
        action = kf.pause_schedule if args.target == "pause" else kf.delete_schedule
        action(args.host, args.recurring_run_id, args.namespace)
        console.print(f"{args.target}d recurring run {args.recurring_run_id}")
        return 0
    if not args.cron:
        raise UserError("fedprune schedule CONFIG needs --cron, e.g. --cron '0 0 2 * * *'")
    cfg = load_config(Path(args.target))
    recurring = kf.schedule(
        cfg,
        args.host,
        args.cron,
        max_concurrency=args.max_concurrency,
        catchup=not args.no_catchup,
        experiment=args.experiment,
        namespace=args.namespace,
        name=args.name,
    )
    console.print(f"scheduled recurring run {recurring.id} ({args.cron})\n{recurring.url}")
    return 0


def add_kubeflow_commands(sub: argparse._SubParsersAction) -> None:
    compile_cmd = sub.add_parser("compile", help="compile the experiment to a KFP pipeline")
    compile_cmd.add_argument("config", type=Path)
    compile_cmd.add_argument("-o", "--output", type=Path, default=Path("pipeline.yaml"))
    compile_cmd.set_defaults(handler=cmd_compile)

    def cluster(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--host", required=True, help="Kubeflow Pipelines API URL")
        parser.add_argument("--namespace", help="profile namespace (multi-user clusters)")

    submit_cmd = sub.add_parser("submit", help="upload and start a run on Kubeflow Pipelines")
    submit_cmd.add_argument("config", type=Path)
    cluster(submit_cmd)
    submit_cmd.add_argument("--experiment", help="KFP experiment (default: the config's)")
    submit_cmd.add_argument("--run-name")
    submit_cmd.set_defaults(handler=cmd_submit)

    schedule_cmd = sub.add_parser(
        "schedule",
        help="recurring runs: `schedule CONFIG --cron ...`, or `schedule list|pause|delete`",
    )
    schedule_cmd.add_argument("target", help="a config file, or one of: list, pause, delete")
    schedule_cmd.add_argument("recurring_run_id", nargs="?", help="for pause and delete")
    cluster(schedule_cmd)
    schedule_cmd.add_argument("--cron", help="6 fields, seconds first: '0 0 2 * * *'")
    schedule_cmd.add_argument("--max-concurrency", type=int, default=1)
    schedule_cmd.add_argument("--no-catchup", action="store_true", help="skip missed runs")
    schedule_cmd.add_argument("--experiment")
    schedule_cmd.add_argument("--name", help="recurring run name")
    schedule_cmd.set_defaults(handler=cmd_schedule)
