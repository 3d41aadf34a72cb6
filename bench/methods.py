"""Every pruning method on MNIST and Fashion-MNIST, non-IID (Dirichlet α=0.5 and 2 shards per
client), at 50/80/90/95% sparsity, plus dense FedAvg; writes docs/results.md and one
accuracy-vs-MB plot per data set. Each run is a normal local-engine run logged to MLflow.

    .venv/bin/python bench/methods.py                 # the whole sweep (~1 h on 2 cores)
    .venv/bin/python bench/methods.py --datasets mnist --sparsities 0.9 --rounds 4  # a taste
    .venv/bin/python bench/methods.py --report-only   # rewrite docs/results.md from the store

A later invocation adds its runs to the same store (e.g. `--methods "lottery (personal)"`),
and the report lists every invocation's command.

The runs log to an `mlflow server` this script starts (SQLite behind it, so two runs can
log at once) and stops at the end; browse them afterwards with
`mlflow ui --backend-store-uri sqlite:///bench-runs/methods/mlflow.db`.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shlex
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fedprune import steps  # noqa: E402
from fedprune.config import ExperimentConfig, parse_config  # noqa: E402
from fedprune.engine import local as engine  # noqa: E402
from fedprune.engine.round import PERSONAL  # noqa: E402
from fedprune.io.codec import decode  # noqa: E402
from fedprune.io.state import ClientState  # noqa: E402
from fedprune.io.store import LocalBackend, RunStore, model_from_bytes  # noqa: E402
from fedprune.steps import GlobalModel, RoundMetrics  # noqa: E402
from fedprune.tasks.datasets import FederatedData, load_dataset  # noqa: E402

WORKLOAD = """Workload per run, sized so the 100 runs fit in about an hour on 2 cores: the FedAvg
paper's MLP (199,210 parameters), 20 clients, 5 sampled per round, {rounds} rounds of 1 local
epoch (batch 32, SGD lr 0.05, momentum 0.5), sparse fp32 payloads, test on the 10k test set
after every round."""

PARTITIONS = {
    "dirichlet 0.5": {"kind": "dirichlet", "alpha": 0.5},
    "shards 2": {"kind": "shards", "shards_per_client": 2},
}


def pruning(method: str, sparsity: float, rounds: int) -> dict:
    """The method's settings at a final sparsity (see docs/methods.md for the choices)."""
    end = max(2, rounds * 3 // 5)
    ramp = {"kind": "gradual", "target": sparsity, "start_round": 2, "end_round": end}
    fixed = {"kind": "oneshot", "target": sparsity, "at_round": 1}
    steps_ = 4  # lottery: reach the target in 4 prune-and-rewind steps, then train on
    rate = 1.0 - (1.0 - sparsity) ** (1.0 / steps_)
    every = max(1, rounds * 3 // 5 // steps_)
    return {
        "dense": {"method": "magnitude"},
        "magnitude (server)": {"method": "magnitude", "schedule": ramp},
        "magnitude (client)": {"method": "magnitude", "schedule": ramp, "placement": "client"},
        "structured": {"method": "structured", "schedule": ramp},
        "feddst": {"method": "feddst", "schedule": fixed, "every": 4},
        "prunefl": {"method": "prunefl", "schedule": fixed, "every": 5},
        "lottery": {
            "method": "lottery",
            "schedule": {"kind": "iterative", "target": sparsity, "every": every, "rate": rate},
        },
        # A client prunes only when it is sampled (5 of 20 per round: ~4 times in 15 rounds),
        # so each step may go a third of the way, and the cap rises every round.
        "lottery (personal)": {
            "method": "lottery",
            "schedule": {
                "kind": "iterative",
                "target": sparsity,
                "every": 1,
                "rate": 1.0 - (1.0 - sparsity) ** (1.0 / 3),
            },
            "personal": True,
        },
    }[method]


METHODS = [
    "dense",
    "magnitude (server)",
    "magnitude (client)",
    "structured",
    "feddst",
    "prunefl",
    "lottery",
    "lottery (personal)",
]


@dataclass
class Spec:
    dataset: str
    partition: str
    method: str
    sparsity: float
    rounds: int
    root: str
    tracking: str


@dataclass
class Row:
    dataset: str
    partition: str
    method: str
    sparsity: float
    final_sparsity: float
    accuracy: float
    best_accuracy: float
    mb_up: float
    mb_down: float
    floor_ratio_up: float
    macs: float
    macs_dense: float
    macs_sparse_kernels: float
    seconds: float
    accuracy_curve: list[float]
    mb_up_curve: list[float]
    personal: bool = False
    client_accuracy: float = math.nan
    """Mean over all clients of the final accuracy, on the client's own label mix, of the
    model it ends with: the global model, or its personal model (LotteryFL)."""


@functools.cache
def dataset(name: str) -> FederatedData:
    """Each data set loaded once per process (the sweep's workers, the report)."""
    return load_dataset(name)


def _start() -> None:
    torch.set_num_threads(1)  # two runs side by side use the two cores better than one


def run(spec: Spec) -> Row:
    data = dataset(spec.dataset)
    root = Path(spec.root)
    cfg = parse_config(
        {
            "experiment": f"methods-{spec.dataset}",
            "rounds": spec.rounds,
            "data": {
                "dataset": spec.dataset,
                "num_clients": 20,
                "partition": PARTITIONS[spec.partition],
            },
            "model": {"name": "mlp"},
            "client": {"epochs": 1, "batch_size": 32, "lr": 0.05, "momentum": 0.5},
            "sampling": {"count": 5},
            "pruning": pruning(spec.method, spec.sparsity, spec.rounds),
            "store": str(root / "runs"),
            "tracking": spec.tracking,
        }
    )
    started = time.perf_counter()
    result = engine.run_experiment(cfg, data=data)
    seconds = time.perf_counter() - started
    store = RunStore(LocalBackend(cfg.store), cfg.experiment, result.run_id)
    return to_row(spec, result.history, json.loads(store.read("costs.json")), seconds)


def to_row(spec: Spec, history: list[RoundMetrics], costs: dict, seconds: float) -> Row:
    up = [m.bytes_up for m in history]
    floor = sum(m.floor_bytes_up for m in history)
    model_up = sum(m.bytes_up - m.importance_bytes_up for m in history)
    cumulative = [sum(up[: i + 1]) / 1e6 for i in range(len(up))]
    return Row(
        dataset=spec.dataset,
        partition=spec.partition,
        method=spec.method,
        sparsity=spec.sparsity,
        final_sparsity=(
            history[-1].personal_sparsity
            if not math.isnan(history[-1].personal_sparsity)
            else history[-1].sparsity
        ),
        accuracy=history[-1].test["accuracy"],
        best_accuracy=max(m.test["accuracy"] for m in history),
        mb_up=cumulative[-1],
        mb_down=sum(m.bytes_down for m in history) / 1e6,
        floor_ratio_up=model_up / floor if floor else math.nan,
        macs=costs["macs"],
        macs_dense=costs["macs_dense"],
        macs_sparse_kernels=costs.get("personal_macs_sparse_kernels", costs["macs_sparse_kernels"]),
        seconds=seconds,
        accuracy_curve=[m.test["accuracy"] for m in history],
        mb_up_curve=cumulative,
        personal=not math.isnan(history[-1].personal_accuracy),
    )


def label(cfg: ExperimentConfig) -> str:
    """The sweep's name for a run's method, read back from its config."""
    pruning = cfg.pruning
    if pruning.schedule.kind == "none":
        return "dense"
    if pruning.method == "magnitude":
        return f"magnitude ({pruning.placement})"
    return pruning.method + (" (personal)" if getattr(pruning, "personal", False) else "")


def rows_from_store(root: Path) -> list[Row]:
    """Every finished run of the sweep, rebuilt from what it published to the store."""
    rows = []
    for folder in sorted((root / "runs").glob("methods-*/*")):
        if not (folder / "costs.json").exists():
            continue  # unfinished
        cfg = ExperimentConfig.model_validate(yaml.safe_load((folder / "config.yaml").read_text()))
        history = [
            RoundMetrics.from_json(m) for m in json.loads((folder / "metrics.json").read_text())
        ]
        partition = next(k for k, v in PARTITIONS.items() if v["kind"] == cfg.data.partition.kind)
        sparsity = cfg.pruning.schedule.target if label(cfg) != "dense" else 0.0
        spec = Spec(cfg.data.dataset, partition, label(cfg), sparsity, cfg.rounds, str(root), "")
        costs = json.loads((folder / "costs.json").read_text())
        row = to_row(spec, history, costs, sum(m.seconds for m in history))
        row.client_accuracy = client_accuracy(folder, cfg)
        rows.append(row)
    return rows


def client_accuracy(folder: Path, cfg: ExperimentConfig) -> float:
    """Mean over all clients of the test accuracy on the client's label mix of the model the
    client ends with: the final global model, or with personal masks the client's latest
    personal model (the global one if it never trained)."""
    data = dataset(cfg.data.dataset)
    rt = steps.Runtime.build(cfg, data=data)
    assert rt.shards is not None

    def per_class(payload: tuple) -> torch.Tensor:
        return steps.evaluate(rt, GlobalModel(*payload)).per_class

    final = per_class(model_from_bytes((folder / "model.safetensors").read_bytes()))
    state = ClientState()
    if getattr(cfg.pruning, "personal", False):
        store = RunStore(LocalBackend(folder.parent.parent), folder.parent.name, folder.name)
        state = ClientState.after(store, cfg.rounds)
    personal = set(state.clients_with(PERSONAL))
    scores = []
    for client, rows in enumerate(rt.shards):
        mine = final
        if client in personal:
            mine = per_class(decode(state.blob(PERSONAL, client)))
        scores.append(steps.mix_accuracy(mine, data.y_train[torch.from_numpy(rows)]))
    return statistics.fmean(scores)


def dense_mb_to_reach(dense: Row, accuracy: float) -> float | None:
    """MB dense FedAvg uploaded until its test accuracy first reached `accuracy`."""
    for acc, mb in zip(dense.accuracy_curve, dense.mb_up_curve, strict=True):
        if acc >= accuracy:
            return mb
    return None


def write_report(rows: list[Row], out: Path, sweeps: list[dict]) -> None:
    lines = [
        "# Results: pruning methods compared",
        "",
        "Tabular records and ResNet-size CNNs: [results-beyond-mnist.md](results-beyond-mnist.md).",
        "",
        "Measured by `bench/methods.py` on this project's 2-core CPU machine (torch 2.13.0 CPU,",
        "one thread per run, two runs side by side). Reproduce with:",
        "",
        "```bash",
        *(i["command"] for i in sweeps),
        "```",
        "",
        WORKLOAD.format(rounds=len(rows[0].accuracy_curve)),
        "Method settings are in `pruning()` of bench/methods.py and explained in",
        "docs/methods.md. Accuracy is the global model's after the last round; MB up counts",
        "every byte clients uploaded over all rounds (model payloads and PruneFL's importance),",
        "MB down every byte they downloaded (values only when they held the mask);",
        "bytes/floor is the model payloads against their entropy floor; MACs are per sample:",
        "as the model runs (channels removed) and with ideal sparse kernels. The floor",
        "Σ N·H(density) assumes independent mask bits; structured masks (whole rows, and",
        "PruneFL's importance picks, which cluster) have less entropy than that, so zstd",
        "codes them below it (ratios under 1).",
        "Client accuracy is what each client gets: the mean over all 20 clients of the test",
        "accuracy, on the client's own label mix (per-class accuracy weighted by its classes),",
        "of the model it ends with, the global model or its personal one. On non-IID splits",
        "that is an easier task than the whole test set, for every method alike.",
        "`lottery (personal)` is LotteryFL with a mask per client: its sparsity is the mean of",
        "the last round's clients' masks, its MACs with sparse kernels the mean of the clients'",
        "final models, and its accuracy that of the global model (the union of the masks),",
        "which no client uses; compare it by client accuracy (the summaries leave it out).",
        f"Whole sweep: {len(rows)} runs in {len(sweeps)} invocation(s), "
        + " + ".join(f"{i['wall'] / 60:.0f} min" for i in sweeps)
        + " wall.",
        "",
    ]
    for dataset in sorted({r.dataset for r in rows}, key=lambda d: (d != "mnist", d)):
        for partition in PARTITIONS:
            chosen = [r for r in rows if r.dataset == dataset and r.partition == partition]
            if not chosen:
                continue
            dense = next((r for r in chosen if r.method == "dense"), None)
            lines += [
                f"## {dataset}, {partition}",
                "",
                "| method | target | sparsity | accuracy | client accuracy | MB up | MB down "
                "| bytes/floor | MACs | MACs sparse kernels | dense MB to same accuracy |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            for r in sorted(chosen, key=lambda r: (r.sparsity, METHODS.index(r.method))):
                reach = dense_mb_to_reach(dense, r.accuracy) if dense and not r.personal else None
                reached = f"{reach:.1f}" if reach is not None else "not reached"
                lines.append(
                    f"| {r.method} | {100 * r.sparsity:.0f}% | {100 * r.final_sparsity:.1f}% "
                    f"| {100 * r.accuracy:.2f}% | {100 * r.client_accuracy:.2f}% | {r.mb_up:.1f} "
                    f"| {r.mb_down:.1f} "
                    f"| {r.floor_ratio_up:.3f} "
                    f"| {r.macs / 1e3:.0f}k | {r.macs_sparse_kernels / 1e3:.0f}k "
                    f"| {'' if r.personal else reached} |"
                )
            lines += ["", *summary(chosen, dense), ""]
        lines += [f"![accuracy vs MB uploaded, {dataset}](results-{dataset}.png)", ""]
        plot(rows, dataset, out.parent / f"results-{dataset}.png")
    ratios = [r.floor_ratio_up for r in rows if r.method != "dense"]
    if ratios:
        lines.append(
            f"bytes/floor over all pruned runs: median {statistics.median(ratios):.3f}, "
            f"max {max(ratios):.3f}."
        )
    out.write_text("\n".join(lines) + "\n")


def summary(rows: list[Row], dense: Row | None) -> list[str]:
    """At 90% sparsity: the most accurate method and what dense FedAvg paid for the same."""
    at_90 = [r for r in rows if r.sparsity == 0.9 and not r.personal]
    if not at_90 or dense is None:
        return []
    best = max(at_90, key=lambda r: r.accuracy)
    reach = dense_mb_to_reach(dense, best.accuracy)
    cost = (
        f"dense FedAvg uploaded {reach:.1f} MB by the round it first reached that accuracy "
        f"({reach / best.mb_up:.1f}× as much)"
        if reach is not None
        else f"dense FedAvg never reached it in {len(dense.accuracy_curve)} rounds"
    )
    return [
        f"At 90%: best accuracy {100 * best.accuracy:.2f}% ({best.method}), "
        f"{best.mb_up:.1f} MB uploaded at bytes/floor {best.floor_ratio_up:.3f}; {cost}."
    ]


def plot(rows: list[Row], dataset: str, path: Path) -> None:
    figure, axes = plt.subplots(1, len(PARTITIONS), figsize=(12, 4.5), sharey=False)
    for axis, partition in zip(axes, PARTITIONS, strict=True):
        for method in METHODS:
            points = sorted(
                (
                    r
                    for r in rows
                    if (r.dataset, r.partition, r.method) == (dataset, partition, method)
                ),
                key=lambda r: r.sparsity,
            )
            personal = bool(points) and points[0].personal
            if points:
                axis.plot(
                    [r.mb_up for r in points],
                    [100 * (r.client_accuracy if personal else r.accuracy) for r in points],
                    marker="o",
                    linestyle="--" if personal else "-",
                    label=f"{method}: client accuracy" if personal else method,
                )
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlabel("MB uploaded in total (log)")
        axis.set_ylabel("final test accuracy (%)")
        axis.set_title(f"{dataset}, {partition}")
        axis.grid(alpha=0.3)
    next(a for a in axes if a.get_legend_handles_labels()[0]).legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--datasets", default="mnist,fashion-mnist")
    parser.add_argument("--partitions", default=",".join(PARTITIONS))
    parser.add_argument("--methods", default=",".join(METHODS), help="dense runs once per split")
    parser.add_argument("--sparsities", default="0.5,0.8,0.9,0.95")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--root", default="bench-runs/methods", help="store + MLflow database")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the report from the finished runs in the store under --root",
    )
    args = parser.parse_args()
    root = Path(args.root).resolve()
    if args.report_only:
        write_report(rows_from_store(root), Path(args.out), invocations(root))
        return
    root.mkdir(parents=True, exist_ok=True)
    server, tracking = start_mlflow(root)
    specs = []
    for dataset in args.datasets.split(","):
        for partition in args.partitions.split(","):
            base = (dataset, partition)
            methods = args.methods.split(",")
            if "dense" in methods:
                specs.append(Spec(*base, "dense", 0.0, args.rounds, str(root), tracking))
            for sparsity in map(float, args.sparsities.split(",")):
                for method in (m for m in methods if m != "dense"):
                    specs.append(Spec(*base, method, sparsity, args.rounds, str(root), tracking))
    print(f"{len(specs)} runs, {args.workers} at a time; MLflow at {tracking}", flush=True)
    started = time.perf_counter()
    rows: list[Row] = []
    try:
        with ProcessPoolExecutor(args.workers, initializer=_start) as pool:
            for row in pool.map(run, specs):
                rows.append(row)
                print(
                    f"[{len(rows)}/{len(specs)}] {row.dataset:<13} {row.partition:<13} "
                    f"{row.method:<19} {100 * row.sparsity:>3.0f}%  "
                    f"acc {100 * row.accuracy:6.2f}%  {row.mb_up:7.1f} MB  "
                    f"floor× {row.floor_ratio_up:.3f}  {row.seconds:5.1f} s",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait(30)
    wall = time.perf_counter() - started
    command = ".venv/bin/python bench/methods.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    done = [*invocations(root), {"command": command, "wall": wall}]
    (root / "sweep.json").write_text(json.dumps(done))
    write_report(rows_from_store(root), Path(args.out), done)
    print(f"done in {wall / 60:.1f} min; wrote {args.out}")


def invocations(root: Path) -> list[dict]:
    """Every invocation that added runs to the store under `root`: command and wall time."""
    path = root / "sweep.json"
    if not path.exists():
        return []
    saved = json.loads(path.read_text())
    return saved if isinstance(saved, list) else [saved]


def start_mlflow(root: Path) -> tuple[subprocess.Popen, str]:
    """A local `mlflow server` on a free port (SQLite store, artifacts in `root`)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        str(Path(sys.executable).parent / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = (root / "mlflow-server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            return server, url
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.5)
    server.terminate()
    raise SystemExit(f"mlflow server did not start; see {root / 'mlflow-server.log'}")


if __name__ == "__main__":
    main()
