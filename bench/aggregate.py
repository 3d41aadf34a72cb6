"""Aggregation throughput: K = 10 and 100 client updates of an 11M-parameter model through the
project's own strategies (fedprune.strategies: fedavg, mask_aware), dense and 90% sparse, against
the device-to-device copy bandwidth measured in the same run.

    .venv/bin/python bench/aggregate.py --device cpu
    .venv/bin/python bench/aggregate.py --device cuda     # on a GPU machine, about a minute

GB/s = bytes of the stacked client updates the rule reads (K·P·4 for the values, + K·P for
the masks in mask_aware) / median seconds of one `aggregate` call. Copy bandwidth = bytes read
+ bytes written per second of `dst.copy_(src)` on a large buffer, the usual measure of memory
bandwidth (a kernel that only reads can exceed it, up to the memory's peak).

"packed": the updates are rows of one (K, P) buffer (fedprune.strategies.stack_updates' form),
so each rule is one GEMV (mask_aware: two per block of columns) over the whole model. "loose":
separate tensors per client and layer, which the rules first copy into a (K, P) matrix.
GPU times use CUDA events after a synchronize; CPU times perf_counter.

Then the robust rules and a server optimiser (`--robust`), each timed against FedAvg on the
same 90%-sparse packed updates, in turns, as the ratio of their medians: they read the
updates in blocks of columns (a block's float64 copy, sort or Gram product stays ~32 MB), so
their memory stays bounded at any K.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/speed.py

import torch  # noqa: E402

from fedprune.records import GlobalModel  # noqa: E402
from fedprune.strategies import STRATEGIES, DecodedUpdate  # noqa: E402

ROBUST = ("fedadam", "norm_clip", "median", "trimmed_mean", "krum", "multikrum", "bulyan")

# An 11M-parameter model as a few large tensors (about ResNet-18's size), plus a bias.
SHAPES = {
    "conv.weight": (512, 512, 3, 3),
    "fc1.weight": (4096, 1024),
    "fc2.weight": (2048, 2048),
    "head.weight": (1000, 256),
    "head.bias": (1000,),
}


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def copy_bandwidth(device: torch.device, nbytes: int, repeats: int) -> float:
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / timed(lambda: dst.copy_(src), device, repeats)


def packed_updates(k: int, sparsity: float, device: torch.device, seed: int):
    """K updates whose weights and masks are rows of one (K, P) buffer each (no copies)."""
    g = torch.Generator(device=device).manual_seed(seed)
    width = sum(torch.Size(s).numel() for s in SHAPES.values())
    values = torch.randn(k, width, generator=g, device=device)
    if sparsity:
        kept = torch.rand(k, width, generator=g, device=device) >= sparsity
        values.mul_(kept)
    else:
        kept = torch.ones(k, width, dtype=torch.bool, device=device)
    counts = torch.randint(50, 700, (k,), generator=torch.Generator().manual_seed(seed)).tolist()
    updates = []
    for row in range(k):
        weights, mask, offset = {}, {}, 0
        for name, shape in SHAPES.items():
            n = torch.Size(shape).numel()
            weights[name] = values[row, offset : offset + n].view(shape)
            mask[name] = kept[row, offset : offset + n].view(shape)
            offset += n
        updates.append(DecodedUpdate(weights, mask, counts[row]))
    return updates, width


def loose(updates: list[DecodedUpdate]) -> list[DecodedUpdate]:
    """The same updates as separate tensors per client and layer."""
    return [
        DecodedUpdate(
            {n: t.clone() for n, t in u.weights.items()},
            {n: m.clone() for n, m in u.mask.items()},
            u.num_samples,
        )
        for u in updates
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default)
    parser.add_argument("--clients", default="10,100")
    parser.add_argument("--repeats", type=int, default=None, help="default: 3 on CPU, 20 on GPU")
    parser.add_argument("--loose-up-to", type=int, default=10, help="largest K also run loose")
    parser.add_argument(
        "--robust", default=",".join(ROBUST), help="rules timed against fedavg ('' for none)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    repeats = args.repeats or (20 if device.type == "cuda" else 3)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")

    copy_bw = copy_bandwidth(device, 1 << 30 if device.type == "cuda" else 256 << 20, repeats)
    print(f"copy bandwidth (read + write): {copy_bw / 1e9:.1f} GB/s\n")
    print(
        f"{'K':>4} {'updates':<14} {'rule':<11} {'layout':<7} {'ms':>9} {'GB/s':>8} {'× copy':>7}"
    )
    rows = []
    for k in [int(c) for c in args.clients.split(",")]:
        for label, sparsity in (("dense", 0.0), ("90% sparse", 0.9)):
            updates, width = packed_updates(k, sparsity, device, seed=k)
            start = GlobalModel(updates[0].weights, updates[0].mask)
            layouts = [("packed", updates)]
            if k <= args.loose_up_to:
                layouts.append(("loose", loose(updates)))
            for layout, batch in layouts:
                for rule in ("fedavg", "mask_aware"):
                    aggregator = STRATEGIES.get(rule)(STRATEGIES[rule].params())
                    read = k * width * (4 + (1 if rule == "mask_aware" else 0))
                    seconds = timed(
                        lambda a=aggregator, b=batch, s=start: a.aggregate(b, s), device, repeats
                    )
                    rate = read / seconds
                    rows.append((k, label, rule, layout, seconds, rate))
                    print(
                        f"{k:>4} {label:<14} {rule:<11} {layout:<7} {1000 * seconds:>9.2f} "
                        f"{rate / 1e9:>8.1f} {rate / copy_bw:>7.2f}",
                        flush=True,
                    )
            del updates, layouts
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.robust:
        robust_ratios(args, device, repeats)
    # The floor of a weighted average: one GEMV over a (K, P) matrix, outside fedprune.
    k = max(int(c) for c in args.clients.split(","))
    stacked = torch.randn(k, width, device=device)
    coef = torch.full((k,), 1 / k, device=device)
    seconds = timed(lambda: coef @ stacked, device, repeats)
    rate = k * width * 4 / seconds
    print(
        f"{k:>4} {'dense':<14} {'plain GEMV':<11} {'packed':<7} {1000 * seconds:>9.2f} "
        f"{rate / 1e9:>8.1f} {rate / copy_bw:>7.2f}"
    )


def robust_ratios(args: argparse.Namespace, device: torch.device, repeats: int) -> None:
    """Each rule's median time over FedAvg's on the same 90%-sparse packed updates, the two
    timed in turns (fedavg, rule, fedavg, rule, …) so drift hits both alike."""
    print(f"\n{'K':>4} {'rule':<13} {'ms':>10} {'fedavg ms':>10} {'× fedavg':>9}")
    fedavg = STRATEGIES.get("fedavg")(STRATEGIES["fedavg"].params())
    for k in [int(c) for c in args.clients.split(",")]:
        updates, _ = packed_updates(k, 0.9, device, seed=k)
        start = GlobalModel(updates[0].weights, updates[0].mask)
        for rule in args.robust.split(","):
            if rule == "bulyan" and k < 7:
                continue
            chosen = STRATEGIES.get(rule)(STRATEGIES[rule].params())
            runs = {"fedavg": [], rule: []}
            for _ in range(repeats):
                for name, strategy in (("fedavg", fedavg), (rule, chosen)):
                    runs[name].append(
                        timed(lambda s=strategy, u=updates, g=start: s.aggregate(u, g), device, 1)
                    )
            ours, base = statistics.median(runs[rule]), statistics.median(runs["fedavg"])
            print(
                f"{k:>4} {rule:<13} {1000 * ours:>10.1f} {1000 * base:>10.1f} {ours / base:>9.1f}"
            )
        del updates, start


if __name__ == "__main__":
    main()
