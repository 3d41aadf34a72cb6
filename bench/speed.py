"""Workload W side by side in one invocation: the bare training floor, the local engine (dense,
90% server-side pruning, structured, vectorised clients, worker processes), and Flower's
simulation runtime.

W: MNIST, 100 IID clients (600 samples each), 10 sampled per round, 10 rounds, 1 local epoch,
batch 32, SGD lr 0.05, the FedAvg paper's CNN, test on the 10k test set after every round, CPU.

    .venv/bin/python bench/speed.py [--repeats 3] [--rounds 10] [--only "bare,engine dense"]

Every run is a fresh process, as `fedprune run` is: it imports torch, loads MNIST and, for the
engine, opens MLflow (a new SQLite database) and publishes to a new store. The repeats are
interleaved (A B A B …) so drift on a shared machine cannot bias a ratio. Each run reports its
wall time (measured by this script, from before the process starts to its exit), the span of
its rounds (first round's start to last round's end, measured inside) and the difference,
its fixed cost; the table has medians, the ratios to the bare floor and to the dense engine,
and the median fixed cost. The "flower" run needs the `bench` extra (pip install -e
'.[dev,bench]'; `make bench` does). The final accuracies must agree within noise, otherwise
the comparison is void.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a machine shared with other work, spinning
# threads of a 2-thread run wait for a busy core and runs get several times slower (measured:
# a client's local training 7 s instead of 1.2 s while another process held one core).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import train_plain  # noqa: E402

from fedprune import steps  # noqa: E402
from fedprune.config import ExperimentConfig, parse_config  # noqa: E402
from fedprune.engine import local as engine  # noqa: E402
from fedprune.tasks.datasets import load_dataset  # noqa: E402
from fedprune.training.local import evaluate  # noqa: E402


def workload(rounds: int, root: Path, **overrides: dict) -> ExperimentConfig:
    raw: dict = {
        "experiment": "bench-speed",
        "rounds": rounds,
        "data": {"num_clients": 100, "partition": {"kind": "iid"}},
        "model": {"name": "cnn"},
        "client": {"epochs": 1, "batch_size": 32, "lr": 0.05},
        "sampling": {"count": 10},
        "compression": {"encoding": "dense"},
        "store": str(root / "runs"),
        "tracking": f"sqlite:///{root / 'runs' / 'mlflow.db'}",
    }
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value}
    return parse_config(raw)


class Span(engine.Progress):
    """Wall clock at the start of the first round and the end of each round."""

    def __init__(self) -> None:
        self.first = self.last = math.nan
        self.rounds: list[float] = []

    def start(self, rounds: int = 0, clients_per_round: int = 0) -> None:
        self.first = self.last = time.perf_counter()

    def round_done(self, metrics) -> None:
        now = time.perf_counter()
        self.rounds.append(now - self.last)
        self.last = now


def bare_floor(cfg: ExperimentConfig, span: Span) -> float:
    """The same training and evaluation as plain PyTorch: no payloads, masks, store, MLflow."""
    data = load_dataset("mnist")
    rt = steps.Runtime.build(cfg, data=data)
    shards, model = rt.shards, rt.model
    assert shards is not None
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    accuracy = 0.0
    span.start()
    for round_ in range(1, cfg.rounds + 1):
        clients = steps.sample_clients(cfg, round_)
        total = {k: torch.zeros_like(v) for k, v in global_state.items()}
        samples = sum(len(shards[c]) for c in clients)
        for client in clients:
            model.load_state_dict(global_state)
            rows = torch.from_numpy(shards[client])
            seed = steps.seed_for(cfg.seed, round_, client)
            train_plain(model, data.x_train[rows], data.y_train[rows], cfg, seed)
            for k, v in model.state_dict().items():
                total[k] += v * (len(rows) / samples)
        global_state = total
        model.load_state_dict(global_state)
        batch = cfg.eval.batch_size
        tested = evaluate(model, data.x_test, data.y_test, batch_size=batch, task=rt.task)
        accuracy = tested.metrics["accuracy"]
        span.round_done(None)
    return accuracy


def engine_run(cfg: ExperimentConfig, span: Span) -> float:
    """`fedprune run`'s path: the engine loads the data itself."""
    return engine.run_experiment(cfg, progress=span).history[-1].test["accuracy"]


def flower(cfg: ExperimentConfig, span: Span) -> float:
    """Flower's simulation runtime on W (the `bench` extra: pip install -e '.[bench]'); its
    rounds are not timed one by one: its whole run counts as rounds."""
    from flower_run import flower_run

    span.start()
    accuracy = flower_run(cfg, torch.get_num_threads())
    span.round_done(None)
    return accuracy


def runs(rounds: int, root: Path) -> dict[str, tuple]:
    """Each run's function and config."""
    sparse = {"compression": {"encoding": "sparse"}}
    return {
        "bare": (bare_floor, workload(rounds, root)),
        "engine dense": (engine_run, workload(rounds, root)),
        "engine 90% pruned": (
            engine_run,
            workload(
                rounds,
                root,
                pruning={"schedule": {"kind": "oneshot", "target": 0.9, "at_round": 1}},
                **sparse,
            ),
        ),
        "engine structured": (  # 75% of parameters: 3.8x fewer MACs
            engine_run,
            workload(
                rounds,
                root,
                pruning={
                    "method": "structured",
                    "schedule": {"kind": "oneshot", "target": 0.75, "at_round": 1},
                },
                **sparse,
            ),
        ),
        "engine vectorised": (engine_run, workload(rounds, root, client={"vectorize": True})),
        "engine 2 workers": (engine_run, workload(rounds, root, engine={"workers": 2})),
        "flower": (flower, workload(rounds, root)),
    }


def child(name: str, rounds: int, root: Path) -> None:
    """One run in this fresh process; prints its accuracy and round times as JSON."""
    run, cfg = runs(rounds, root)[name]
    span = Span()
    accuracy = run(cfg, span)
    result = {"accuracy": accuracy, "span": span.last - span.first, "rounds": span.rounds}
    print("RESULT " + json.dumps(result), flush=True)


def one(name: str, args: argparse.Namespace, root: Path) -> dict:
    """Run `name` in a fresh process; its wall time is measured from here."""
    command = [sys.executable, __file__, "--child", name, "--rounds", str(args.rounds)]
    command += ["--threads", str(args.threads), "--root", str(root)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT ")) | {"wall": wall}
    result["fixed"] = wall - result["span"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated subset of the runs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(args.child, args.rounds, args.root)
        return
    root = Path(tempfile.mkdtemp(prefix="fedprune-bench-"))
    names = [n for n in runs(args.rounds, root) if not args.only or n in args.only.split(",")]
    results: dict[str, list[dict]] = {n: [] for n in names}
    for repeat in range(args.repeats):  # interleaved: A B C A B C …
        for name in names:
            results[name].append(one(name, args, root))
            r = results[name][-1]
            print(
                f"repeat {repeat + 1} {name}: {r['wall']:.1f} s (rounds {r['span']:.1f} s, "
                f"fixed {r['fixed']:.1f} s), accuracy {100 * r['accuracy']:.2f}%",
                flush=True,
            )
    median = {n: statistics.median(r["wall"] for r in rs) for n, rs in results.items()}
    floor, dense = median.get("bare"), median.get("engine dense")
    print(
        f"\nW: {args.rounds} rounds, median of {args.repeats} (interleaved), {args.threads} threads"
    )
    header = (
        f"{'run':<20} {'median s':>9} {'× bare':>7} {'× engine':>9} {'fixed s':>8} {'round s':>8}"
    )
    print(header + f" {'final acc %':>12}  runs (s)")
    for name, rs in results.items():
        ratio = f"{median[name] / floor:.3f}" if floor else "-"
        to_engine = f"{median[name] / dense:.3f}" if dense else "-"
        fixed = statistics.median(r["fixed"] for r in rs)
        later = [s for r in rs for s in r["rounds"][1:]] or [r["span"] for r in rs]
        accuracy = 100 * statistics.median(r["accuracy"] for r in rs)
        walls = " / ".join(f"{r['wall']:.1f}" for r in rs)
        print(
            f"{name:<20} {median[name]:>9.1f} {ratio:>7} {to_engine:>9} {fixed:>8.2f} "
            f"{statistics.median(later):>8.2f} {accuracy:>12.2f}  ({walls})"
        )
    if floor and dense:
        extra = statistics.median(r["fixed"] for r in results["engine dense"]) - statistics.median(
            r["fixed"] for r in results["bare"]
        )
        print(f"engine's fixed cost beyond the bare floor's (medians): {extra:.2f} s")


if __name__ == "__main__":
    main()
