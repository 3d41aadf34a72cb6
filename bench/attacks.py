"""Byzantine clients against the server strategies: sign flipping, scaling, Gaussian noise and
label flipping by 10/20/30% of the clients, on IID and Dirichlet(0.5) MNIST splits, dense and
pruned to 90%; the final test accuracy per rule goes to docs/results.md.

    .venv/bin/python bench/attacks.py                       # the whole grid (~4 h on 2 cores)
    .venv/bin/python bench/attacks.py --fractions 0.2 --partitions iid   # what results.md shows

Workload per run: the FedAvg paper's MLP, 20 clients who all train every round (so Bulyan's
n ≥ 4f + 3 holds at 20%), 12,000 training rows, 10 rounds of 1 local epoch; the malicious
clients are the first ⌈fraction · 20⌉. Attacks act on what a client uploads, under its mask
(pruned coordinates stay 0): `sign_flip` sends g − 4Δ, `scaling` g + 10Δ, `noise` g + N(0, 1)
(Δ = its trained model − the global g it received), `label_flip` trains on 9 − y. Each rule
runs with its defaults (20% tolerated), so 30% exceeds what Krum and Bulyan assume.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fedprune import steps  # noqa: E402
from fedprune.config import parse_config  # noqa: E402
from fedprune.engine import local as engine  # noqa: E402
from fedprune.io.codec import decode, encode  # noqa: E402
from fedprune.steps import runtime  # noqa: E402
from fedprune.steps.screening import RoundFailed  # noqa: E402
from fedprune.tasks.datasets import load_dataset  # noqa: E402

CLIENTS = 20
RULES = ["mask_aware", "fedadam", "median", "trimmed_mean", "krum", "multikrum", "bulyan", "norm_clip"]  # fmt: skip
ATTACKS = ["none", "sign_flip", "scaling", "noise", "label_flip"]
PARTITIONS = {"iid": {"kind": "iid"}, "dirichlet 0.5": {"kind": "dirichlet", "alpha": 0.5}}
PRUNING = {
    "dense": {"method": "magnitude"},
    "90% pruned": {
        "method": "magnitude",
        "schedule": {"kind": "gradual", "target": 0.9, "start_round": 2, "end_round": 7},
    },
}
BEGIN, END = "<!-- attacks:begin -->", "<!-- attacks:end -->"


def poisoned(attack: str, payload: bytes, received: bytes, cfg, seed: int) -> bytes:
    """The malicious client's upload in place of its honest `payload`."""
    trained, mask = decode(payload)
    start, _ = decode(received)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, w in trained.items():
        if not w.is_floating_point():
            out[name] = w
            continue
        delta = w - start[name]
        sent = {
            "sign_flip": start[name] - 4 * delta,
            "scaling": start[name] + 10 * delta,
            "noise": start[name] + torch.randn(w.shape, generator=g),
        }[attack]
        out[name] = torch.where(mask[name], sent, 0.0) if name in mask else sent
    return encode(out, mask, cfg.compression)


def one_run(rule: str, attack: str, fraction: float, partition: str, pruned: str, data) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        cfg = parse_config(
            {
                "experiment": "attacks",
                "rounds": 10,
                "seed": 1,
                "data": {"num_clients": CLIENTS, "partition": PARTITIONS[partition]},
                "model": {"name": "mlp"},
                "client": {"epochs": 1, "batch_size": 32, "lr": 0.05, "momentum": 0.5},
                "pruning": PRUNING[pruned],
                "aggregation": {"method": rule},
                "store": f"{scratch}/runs",
                "tracking": f"sqlite:///{scratch}/mlflow.db",
            }
        )
        bad = set(range(math.ceil(fraction * CLIENTS))) if attack != "none" else set()
        shards = steps.partition_data(data, cfg)
        run_data = data
        if attack == "label_flip":
            y = data.y_train.clone()
            for client in bad:
                rows = torch.from_numpy(shards[client])
                y[rows] = 9 - y[rows]
            run_data = dataclasses.replace(data, y_train=y)
        real_train, real_partition = steps.train_clients, runtime.partition_data

        def train(rt, payload, group, **kwargs):
            updates = real_train(rt, payload, group, **kwargs)
            if attack in ("none", "label_flip"):
                return updates
            return [
                dataclasses.replace(
                    u,
                    payload=poisoned(
                        attack, u.payload, payload, cfg, 1000 * kwargs["round_"] + u.client
                    ),
                )
                if u.client in bad
                else u
                for u in updates
            ]

        steps.train_clients = train
        runtime.partition_data = lambda *_: shards  # the clean split, labels flipped or not
        try:
            result = engine.run_experiment(cfg, data=run_data)
        except RoundFailed:  # the attack broke the model: every client diverged from it
            return math.nan
        finally:
            steps.train_clients, runtime.partition_data = real_train, real_partition
        return result.history[-1].test["accuracy"]


def shown(accuracy: float | None) -> str:
    """A cell: not run yet (-), the run failed because the model diverged (fail), or %."""
    if accuracy is None:
        return "-"
    return "fail" if math.isnan(accuracy) else f"{100 * accuracy:.1f}"


def report(rows: list[tuple], commands: list[str]) -> str:
    """A markdown table per (partition, fraction): rules down, attacks across, dense/pruned."""
    out = [
        BEGIN,
        "## Byzantine clients (bench/attacks.py)",
        "",
        "; ".join(f"`{c}`" for c in commands) + ". "
        "Final test accuracy (%) after 10 rounds, dense / 90% pruned (`fail`: the attack made "
        "the model diverge and the screening stopped the run; `-`: not run yet); "
        "20 MNIST clients, all training every round, the first ⌈fraction · 20⌉ malicious "
        "(see the script's docstring for the attacks).",
    ]
    keyed = {(r[0], r[1], r[2], r[3], r[4]): r[5] for r in rows}
    for partition, fraction in sorted({(r[3], r[2]) for r in rows}):
        attacks = [a for a in ATTACKS if any(k[1] == a and k[3] == partition for k in keyed)]
        out += ["", f"**{partition}, {fraction:.0%} malicious**", ""]
        out += ["| rule | " + " | ".join(attacks) + " |", "| --- |" + " --- |" * len(attacks)]
        for rule in [r for r in RULES if any(k[0] == r for k in keyed)]:
            cells = []
            for attack in attacks:
                pair = [keyed.get((rule, attack, fraction, partition, p)) for p in PRUNING]
                cells.append(" / ".join(shown(v) for v in pair))
            out.append(f"| `{rule}` | " + " | ".join(cells) + " |")
    return "\n".join([*out, END])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--fractions", default="0.1,0.2,0.3")
    parser.add_argument("--partitions", default=",".join(PARTITIONS))
    parser.add_argument("--pruning", default=",".join(PRUNING))
    parser.add_argument("--results", default=str(ROOT / "docs" / "results.md"))
    parser.add_argument(
        "--rows",
        default=str(ROOT / "bench" / "results" / "attacks.json"),
        help="runs kept across calls (tracked: the grid is filled in over several sessions)",
    )
    args = parser.parse_args()
    data = load_dataset("mnist", train_subset=12000, test_subset=10000)
    grid = list(
        itertools.product(
            args.partitions.split(","),
            [float(f) for f in args.fractions.split(",")],
            args.attacks.split(","),
            args.rules.split(","),
            args.pruning.split(","),
        )
    )
    command = shlex.join(["python", "bench/attacks.py", *sys.argv[1:]])
    fractions = [float(f) for f in args.fractions.split(",")]
    for i, (partition, fraction, attack, rule, pruned) in enumerate(grid, 1):
        if attack == "none" and fraction != min(fractions):
            continue  # no attack: the same run at every fraction
        started = time.perf_counter()
        accuracy = one_run(rule, attack, fraction, partition, pruned, data)
        done = [(rule, attack, f, partition, pruned, accuracy) for f in fractions] if attack == "none" else [(rule, attack, fraction, partition, pruned, accuracy)]  # fmt: skip
        keep(Path(args.rows), done, command)  # after every run: an interrupted grid loses one
        print(
            f"[{i}/{len(grid)}] {partition:<13} {fraction:.0%} {attack:<10} {rule:<12} "
            f"{pruned:<10} {100 * accuracy:6.2f}%  {time.perf_counter() - started:5.1f} s",
            flush=True,
        )
    stored = json.loads(Path(args.rows).read_text())
    results = Path(args.results)
    text = results.read_text() if results.exists() else ""
    table = report([tuple(r) for r in stored["rows"]], stored["commands"])
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + table + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + table + "\n"
    results.write_text(text)
    print(f"wrote {results}")


def keep(path: Path, rows: list[tuple], command: str) -> None:
    """Add `rows` to the runs kept in `path` (a run measured again replaces the old one)."""
    earlier = json.loads(path.read_text()) if path.exists() else {"rows": [], "commands": []}
    fresh = {tuple(r[:5]) for r in rows}
    kept = [r for r in earlier["rows"] if tuple(r[:5]) not in fresh] + [list(r) for r in rows]
    commands = [c for c in earlier["commands"] if c != command] + [command]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": kept, "commands": commands}, indent=1))


if __name__ == "__main__":
    main()
