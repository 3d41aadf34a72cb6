"""Vectorised clients (`client.vectorize`: one torch.func.vmap over stacked client parameters)
against the sequential loop: one round of local training of K clients, side by side.

    .venv/bin/python bench/vectorized.py                        # CPU, MLP, K = 10, 100, 1000
    python bench/vectorized.py --device cuda --model cnn        # on a GPU machine

Each client has `--samples` MNIST images (fewer when K × samples exceeds the 60k train set),
1 local epoch, batch 32, SGD lr 0.05; both paths get the same batches (per-client generators),
and the largest weight difference between them is printed as a check. Medians of `--repeats`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fedprune.pruning.masks import full_mask, prunable_names  # noqa: E402
from fedprune.tasks.datasets import load_dataset  # noqa: E402
from fedprune.tasks.models import MODELS, build_model  # noqa: E402
from fedprune.tasks.objectives import build_task  # noqa: E402
from fedprune.training.local import ClientConfig, local_train  # noqa: E402
from fedprune.training.vectorized import train_together  # noqa: E402


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(run, device: str, repeats: int) -> tuple[float, object]:
    seconds, result = [], None
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        result = run()
        sync(device)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", default="mlp", choices=sorted(MODELS.names()))
    parser.add_argument("--clients", default="10,100,1000")
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist")
    x, y = data.x_train.to(args.device), data.y_train.to(args.device)
    params = MODELS[args.model].params()  # the model's default settings
    model = build_model(params, data.input_shape, data.num_classes, seed=0).to(args.device)
    start = {n: t.detach().clone() for n, t in model.state_dict().items()}
    mask = full_mask(start, prunable_names(start))
    cfg = ClientConfig(epochs=1, batch_size=32, lr=0.05)
    print(f"{args.model} on {args.device}, medians of {args.repeats}")
    print(f"{'clients':>8} {'samples':>8} {'sequential s':>13} {'vectorised s':>13} {'speedup':>8}")
    for clients in map(int, args.clients.split(",")):
        samples = min(args.samples, len(y) // clients)
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        shards = [order[k * samples : (k + 1) * samples] for k in range(clients)]
        runs = {
            "sequential": lambda s=shards: sequential(model, start, mask, x, y, s, cfg),
            "vectorised": lambda s=shards: train_together(
                model,
                start,
                mask,
                x=x,
                y=y,
                shards=s,
                generators=generators(len(s)),
                cfg=cfg,
                task=build_task(),
            )[0],
        }
        for run in runs.values():
            run()  # warm-up: first-call allocations and kernel selection
        (seq_s, seq), (vec_s, vec) = (timed(r, args.device, args.repeats) for r in runs.values())
        diff = max(
            float((a[n] - b[n]).abs().max()) for a, b in zip(seq, vec, strict=True) for n in a
        )
        print(
            f"{clients:>8} {samples:>8} {seq_s:>13.3f} {vec_s:>13.3f} {seq_s / vec_s:>7.2f}×"
            f"   (max |Δw| {diff:.1e})",
            flush=True,
        )


def generators(clients: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(k) for k in range(clients)]


def sequential(model, start, mask, x, y, shards, cfg) -> list[dict[str, torch.Tensor]]:
    """The engine's sequential path: one client after another in the one model."""
    out = []
    for rows, generator in zip(shards, generators(len(shards)), strict=True):
        model.load_state_dict(start)
        local_train(
            model,
            mask,
            x=x[rows.to(x.device)],
            y=y[rows.to(x.device)],
            cfg=cfg,
            generator=generator,
            task=build_task(),
        )
        out.append({n: t.detach().clone().cpu() for n, t in model.state_dict().items()})
    return out


if __name__ == "__main__":
    main()
