"""`fedprune compile | submit | schedule`: the Kubeflow side of the command line.

`pipelines/` (which needs kfp) is imported inside each handler, so the core and the local
commands never load kfp.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import urlsplit

from rich.table import Table

from fedprune.config import ExperimentConfig, load_config
from fedprune.console import console
from fedprune.errors import UserError

SCHEDULE_ACTIONS = ("list", "pause", "delete")


def host_url(value: str) -> str:
    """`--host`: a URL with its scheme, checked before anything is contacted."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"'{value}' is not an http:// or https:// URL (e.g. http://localhost:8080, the "
            "Kubeflow Pipelines API or UI address)"
        )
    return value


def cluster_problems(cfg: ExperimentConfig) -> list[str]:
    """Settings that work on this machine but not across pods: a local store folder and a
    SQLite tracking file are on no pod's disk."""
    problems = []
    if not cfg.store.startswith("s3://"):
        problems.append(
            f"store '{cfg.store}' is a folder on this machine, which the pods cannot share: "
            "set store: s3://BUCKET/PREFIX and s3.endpoint (the chart's MinIO)"
        )
    if cfg.tracking.startswith("sqlite:"):
        problems.append(
            f"tracking '{cfg.tracking}' is a file on this machine: set tracking to the MLflow "
            "server the pods reach, e.g. http://fedprune-mlflow:5000"
        )
    return problems


def refuse_local(cfg: ExperimentConfig, command: str) -> None:
    problems = cluster_problems(cfg)
    if problems:
        raise UserError(f"{command}: " + "; ".join(problems))


def say_gpu(cfg: ExperimentConfig) -> None:
    """Say when the pipeline asks for GPUs: a pod that waits for one is otherwise a mystery."""
    aggregator = cfg.kubeflow.aggregator
    if aggregator.device == "gpu":
        console.print(
            f"the aggregate pods request {aggregator.accelerator_limit} "
            f"{aggregator.accelerator_type} each (set kubeflow.aggregator.device: cpu to run "
            "them on any node)",
            highlight=False,
        )


def cmd_compile(args: argparse.Namespace) -> int:
    import time

    from pipelines.federated_pruning import compile_pipeline, group_count, segments

    cfg = load_config(args.config)
    for problem in cluster_problems(cfg):
        console.print(f"[bold yellow]warning:[/] {problem}", highlight=False)
    say_gpu(cfg)
    if not args.output.parent.is_dir():
        raise UserError(f"-o/--output: folder {args.output.parent} does not exist")
    started = time.perf_counter()
    spans = segments(cfg)
    out = args.output
    for first, last in spans:
        name = (
            out
            if len(spans) == 1
            else out.with_name(f"{out.stem}-rounds-{first:03d}-{last:03d}{out.suffix}")
        )
        path = compile_pipeline(cfg, name, segment=(first, last))
        console.print(f"compiled {path}: rounds {first}-{last}", highlight=False)
    console.print(
        f"{time.perf_counter() - started:.1f} s: {cfg.rounds} rounds × {group_count(cfg)} client "
        f"groups of ≤ {cfg.kubeflow.clients_per_pod}"
        + ("" if len(spans) == 1 else f", in {len(spans)} runs (kubeflow.max_spec_kb): each "
           "after the first continues the run its continue_run parameter names")
    )  # fmt: skip
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from pipelines.submit import submit

    cfg = load_config(args.config)
    refuse_local(cfg, "submit")
    say_gpu(cfg)
    run = submit(
        cfg,
        args.host,
        experiment=args.experiment,
        namespace=args.namespace,
        run_name=args.run_name,
        continue_run=args.continue_run,
    )
    console.print(f"submitted run {run.id}\n{run.url}")
    first, last = run.rounds
    if last < cfg.rounds:
        console.print(
            f"this run holds rounds {first}-{last} of {cfg.rounds} (kubeflow.rounds_per_run); "
            f"when it has finished: fedprune submit {args.config} --host {args.host} --continue "
            "RUN_ID, with the MLflow run id (its setup step's output)",
            highlight=False,
        )
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
    refuse_local(cfg, "schedule")
    say_gpu(cfg)
    recurring = kf.schedule(
        cfg,
        args.host,
        args.cron,
        max_concurrency=args.max_concurrency,
        catchup=args.catchup,
        experiment=args.experiment,
        namespace=args.namespace,
        name=args.name,
    )
    console.print(f"scheduled recurring run {recurring.id} ({args.cron})\n{recurring.url}")
    return 0


def add_kubeflow_commands(sub: argparse._SubParsersAction) -> None:
    compile_cmd = sub.add_parser("compile", help="compile the experiment to a KFP pipeline")
    compile_cmd.add_argument("config", type=Path, help="the experiment's YAML config")
    compile_cmd.add_argument(
        "-o", "--output", type=Path, default=Path("pipeline.yaml"), help="the pipeline's YAML"
    )
    compile_cmd.set_defaults(handler=cmd_compile)

    def cluster(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--host", required=True, type=host_url, help="Kubeflow Pipelines API URL (http[s]://…)"
        )
        parser.add_argument(
            "--namespace", help="profile namespace (required on multi-user clusters)"
        )

    submit_cmd = sub.add_parser("submit", help="upload and start a run on Kubeflow Pipelines")
    submit_cmd.add_argument("config", type=Path, help="the experiment's YAML config")
    cluster(submit_cmd)
    submit_cmd.add_argument("--experiment", help="KFP experiment (default: the config's)")
    submit_cmd.add_argument("--run-name", help="KFP run name (default: <experiment>-s<seed>)")
    submit_cmd.add_argument(
        "--continue",
        dest="continue_run",
        metavar="RUN_ID",
        help="run the next rounds of this MLflow/store run (a long experiment's next segment)",
    )
    submit_cmd.set_defaults(handler=cmd_submit)

    schedule_cmd = sub.add_parser(
        "schedule",
        help="recurring runs: `schedule CONFIG --cron ...`, or `schedule list|pause|delete`",
    )
    schedule_cmd.add_argument("target", help="a config file, or one of: list, pause, delete")
    schedule_cmd.add_argument("recurring_run_id", nargs="?", help="for pause and delete")
    cluster(schedule_cmd)
    schedule_cmd.add_argument("--cron", help="6 fields, seconds first: '0 0 2 * * *'")
    schedule_cmd.add_argument(
        "--max-concurrency", type=int, default=1, help="runs of the schedule at once (default 1)"
    )
    schedule_cmd.add_argument(
        "--catch-up",
        dest="catchup",
        action="store_true",
        help="after a pause or backlog, start one run per missed slot (default: only the latest)",
    )
    schedule_cmd.add_argument("--experiment", help="KFP experiment (default: the config's)")
    schedule_cmd.add_argument("--name", help="recurring run name")
    schedule_cmd.set_defaults(handler=cmd_schedule)
