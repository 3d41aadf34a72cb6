"""Scale: 1,000 clients (60 MNIST samples each, IID over the 60k train set), 100 sampled per
round, 5 rounds, through the local engine; seconds per round and peak memory. Beside it, the
same per-round work with 100 clients (60 samples each: a 6k train subset, every client every
round), to show that memory does not grow with the number of clients beyond their index lists.

    .venv/bin/python bench/scale.py [--model mlp] [--rounds 5]

Each configuration runs in a fresh process, so its peak RSS (ru_maxrss) is its own. "after
data" is the RSS once the data set is loaded, before the run; "growth" is peak minus that;
"traced peak" is tracemalloc's peak over the run (Python and numpy allocations: the partition's
index lists, payload bytes; torch's own tensor memory is not traced); "index lists" is the
bytes of all clients' sample-index arrays.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/speed.py


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def one(clients: int, per_round: int, subset: int | None, model: str, rounds: int) -> dict:
    """Runs in its own process: one configuration through fedprune.engine.local.run_experiment."""
    import torch

    from fedprune import steps
    from fedprune.config import parse_config
    from fedprune.engine import local as engine

    torch.set_num_threads(2)
    root = Path(tempfile.mkdtemp(prefix="fedprune-scale-"))
    data_cfg: dict = {"num_clients": clients, "partition": {"kind": "iid"}}
    if subset:
        data_cfg["train_subset"] = subset
    cfg = parse_config(
        {
            "experiment": "bench-scale",
            "rounds": rounds,
            "data": data_cfg,
            "model": {"name": model},
            "client": {"epochs": 1, "batch_size": 32, "lr": 0.05},
            "sampling": {"count": per_round},
            "compression": {"encoding": "dense"},
            "store": str(root / "runs"),
            "tracking": f"sqlite:///{root / 'runs' / 'mlflow.db'}",
        }
    )
    data = steps.load_data(cfg)
    shards = steps.partition_data(data, cfg)
    index_bytes = sum(shard.nbytes for shard in shards)
    samples = len(shards[0])
    del shards
    after_data = rss_mb()
    tracemalloc.start()
    started = time.perf_counter()
    result = engine.run_experiment(cfg, data=data)
    wall = time.perf_counter() - started
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    per_round = [r.seconds for r in result.history]
    return {
        "clients": clients,
        "per_round": cfg.clients_per_round(),
        "samples": samples,
        "round_s": sorted(per_round)[len(per_round) // 2],
        "wall_s": wall,
        "accuracy": result.history[-1].test["accuracy"],
        "after_data_mb": after_data,
        "peak_mb": peak,
        "traced_peak_mb": traced_peak / 2**20,
        "index_kb": index_bytes / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp", choices=["mlp", "lenet5", "cnn"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        clients, per_round, subset = json.loads(args.one)
        print(json.dumps(one(clients, per_round, subset, args.model, args.rounds)))
        return
    runs = [(100, 100, 6000), (1000, 100, None)]  # same per-round work: 100 clients × 60
    results = []
    for spec in runs:
        command = [sys.executable, __file__, "--model", args.model, "--rounds", str(args.rounds)]
        out = subprocess.run(
            [*command, "--one", json.dumps(spec)], check=True, capture_output=True, text=True
        ).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    print(f"\nmodel {args.model}, {args.rounds} rounds, 2 threads, median s per round")
    header = (
        f"{'clients':>8} {'per round':>9} {'samples':>8} {'s/round':>8} {'acc %':>6} "
        f"{'after data MB':>13} {'peak RSS MB':>11} {'growth MB':>9} {'traced peak MB':>14} "
        f"{'index lists KB':>14}"
    )
    print(header)
    for r in results:
        print(
            f"{r['clients']:>8} {r['per_round']:>9} {r['samples']:>8} {r['round_s']:>8.2f} "
            f"{100 * r['accuracy']:>6.2f} {r['after_data_mb']:>13.0f} {r['peak_mb']:>11.0f} "
            f"{r['peak_mb'] - r['after_data_mb']:>9.0f} {r['traced_peak_mb']:>14.1f} "
            f"{r['index_kb']:>14.0f}"
        )


if __name__ == "__main__":
    main()
