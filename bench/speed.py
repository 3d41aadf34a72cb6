"""Workload W side by side in one run: the bare training floor, the local engine (dense, 90%
server-side pruning, vectorised clients, worker processes), and Flower's simulation runtime.

W: MNIST, 100 IID clients (600 samples each), 10 sampled per round, 10 rounds, 1 local epoch,
batch 32, SGD lr 0.05, the FedAvg paper's CNN, test on the 10k test set after every round, CPU.

    .venv/bin/python bench/speed.py [--repeats 3] [--rounds 10] [--only "bare,engine dense"]

The "flower" run needs the `bench` extra (pip install -e '.[dev,bench]'; `make bench` does).
Prints each run and a table of medians with the ratios to the bare floor and to the dense
engine (Flower/engine is the "flower" row's "× engine"); the final
accuracies must agree within noise, otherwise the comparison is void.
"""

from __future__ import annotations

import argparse
import os
import statistics
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
from common import Timing, measure, train_plain  # noqa: E402

from fedprune import steps  # noqa: E402
from fedprune.config import ExperimentConfig, parse_config  # noqa: E402
from fedprune.engine import local as engine  # noqa: E402
from fedprune.tasks.datasets import ImageDataset, load_dataset  # noqa: E402
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


class EvalClock:
    """Seconds spent testing the global model, to report evaluation's share of a run."""

    seconds = 0.0


def bare_floor(cfg: ExperimentConfig, data: ImageDataset) -> float:
    """The same training and evaluation as plain PyTorch: no payloads, masks, store, MLflow."""
    rt = steps.Runtime.build(cfg, data=data)
    shards, model = rt.shards, rt.model
    assert shards is not None
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    accuracy = 0.0
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
        started = time.perf_counter()
        accuracy = evaluate(
            model, data.x_test, data.y_test, batch_size=cfg.eval.batch_size
        ).accuracy
        EvalClock.seconds += time.perf_counter() - started
    return accuracy


class RoundClock:
    """Seconds of each engine round after the first (the first round of a pruned run is
    still dense), to compare round times of pruned and dense runs."""

    seconds: list[float] = []


def engine_run(cfg: ExperimentConfig, data: ImageDataset) -> float:
    history = engine.run_experiment(cfg, data=data).history
    RoundClock.seconds += [m.seconds for m in history[1:]]
    return history[-1].test_accuracy


def flower(cfg: ExperimentConfig, threads: int) -> float:
    """Flower's simulation runtime on W (the `bench` extra: pip install -e '.[bench]')."""
    from flower_run import flower_run

    return flower_run(cfg, threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated subset of the runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist")
    root = Path(tempfile.mkdtemp(prefix="fedprune-bench-"))
    base = workload(args.rounds, root)
    runs = {
        "bare": lambda: bare_floor(base, data),
        "engine dense": lambda: engine_run(base, data),
        "engine 90% pruned": lambda: engine_run(
            workload(
                args.rounds,
                root,
                pruning={"schedule": {"kind": "oneshot", "target": 0.9, "at_round": 1}},
                compression={"encoding": "sparse"},
            ),
            data,
        ),
        "engine structured": lambda: engine_run(  # 75% of parameters: 3.8x fewer MACs
            workload(
                args.rounds,
                root,
                pruning={
                    "method": "structured",
                    "schedule": {"kind": "oneshot", "target": 0.75, "at_round": 1},
                },
                compression={"encoding": "sparse"},
            ),
            data,
        ),
        "engine vectorised": lambda: engine_run(
            workload(args.rounds, root, client={"vectorize": True}), data
        ),
        "engine 2 workers": lambda: engine_run(
            workload(args.rounds, root, engine={"workers": 2}), data
        ),
        "flower": lambda: flower(base, args.threads),
    }
    chosen = [n for n in runs if not args.only or n in args.only.split(",")]
    results: list[Timing] = []
    rounds: dict[str, float] = {}
    for name in chosen:
        print(f"{name}:", flush=True)
        EvalClock.seconds = 0.0
        RoundClock.seconds = []
        results.append(measure(name, runs[name], args.repeats))
        if RoundClock.seconds:
            rounds[name] = statistics.median(RoundClock.seconds)
            print(f"  median round (rounds 2+, all repeats): {rounds[name]:.2f} s")
        if name == "bare":
            share = EvalClock.seconds / sum(results[-1].seconds)
            print(f"  evaluation share of the bare run: {100 * share:.1f}%")
    if "engine dense" in rounds:
        for name, seconds in rounds.items():
            print(f"round time {name}: {seconds:.2f} s = {seconds / rounds['engine dense']:.2f}×")
    floor = next((t.median for t in results if t.name == "bare"), None)
    dense = next((t.median for t in results if t.name == "engine dense"), None)
    print(f"\nW: {args.rounds} rounds, median of {args.repeats}, {args.threads} threads")
    print(f"{'run':<20} {'median s':>9} {'× bare':>8} {'× engine':>9} {'final acc %':>12}")
    for t in results:
        ratio = f"{t.median / floor:.2f}" if floor else "-"
        to_engine = f"{t.median / dense:.2f}" if dense else "-"
        accuracy = 100 * sorted(t.accuracy)[len(t.accuracy) // 2]
        runs = " / ".join(f"{s:.1f}" for s in t.seconds)
        print(
            f"{t.name:<20} {t.median:>9.1f} {ratio:>8} {to_engine:>9} {accuracy:>12.2f}  ({runs})"
        )


if __name__ == "__main__":
    main()
