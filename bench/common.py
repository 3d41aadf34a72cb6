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
