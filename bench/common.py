"""Shared by the benchmarks: timing with medians, and the data loaded once."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Timing:
    name: str
    seconds: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def measure(name: str, run: Callable[[], float], repeats: int) -> Timing:
    """`run` does the work and returns the final accuracy; wall seconds are measured here."""
    timing = Timing(name)
    for _ in range(repeats):
        started = time.perf_counter()
        accuracy = run()
        timing.seconds.append(time.perf_counter() - started)
        timing.accuracy.append(accuracy)
        print(f"  {name}: {timing.seconds[-1]:.1f} s, accuracy {100 * accuracy:.2f}%", flush=True)
    return timing


def train_plain(model, x, y, cfg, seed: int) -> None:
    """One client's local training as a plain PyTorch loop (the bare floor and Flower's
    clients): SGD at cfg.client.lr, batches in the order of a generator seeded with `seed`."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.client.lr)
    model.train()
    for _ in range(cfg.client.epochs):
        for batch in torch.randperm(len(y), generator=generator).split(cfg.client.batch_size):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
