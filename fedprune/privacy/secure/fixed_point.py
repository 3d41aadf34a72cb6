"""Float vectors as elements of the ring Z/2^64, where the masks live.

Masking needs exact, wrapping arithmetic, so each float x becomes round(x·2^frac_bits) in
two's complement (uint64). The ring sum decodes correctly while the true sum stays within
(−2^63, 2^63): `check_setting` refuses settings where n clients at the bound could leave it,
and `encode` refuses a client whose input exceeds the bound it agreed to.

The default of 24 fractional bits gives a resolution of 2^-24 ≈ 6e-8, float32's own relative
precision at magnitude 1 (model updates are float32: finer bits would only encode their
rounding noise). That leaves 39 bits for n·B: with the default bound 2^20 on |x|, up to
2^19 (524,288) clients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_FRAC_BITS = 24
DEFAULT_BOUND = 2.0**20
_HALF_RING = 2**63  # the signed range's edge: a sum reaching it wraps to the other sign


@dataclass(frozen=True)
class FixedPoint:
    """The encoding every client and the server of a round agree on before it starts."""

    frac_bits: int = DEFAULT_FRAC_BITS
    bound: float = DEFAULT_BOUND
    """|x| ≤ bound for every coordinate of every client's input."""

    def __post_init__(self) -> None:
        if not 0 <= self.frac_bits < 63:
            raise ValueError(f"frac_bits {self.frac_bits} must be in [0, 63)")
        if not (math.isfinite(self.bound) and self.bound > 0):
            raise ValueError(f"bound {self.bound} must be a positive finite number")

    @property
    def scale(self) -> float:
        return float(2**self.frac_bits)

    def check_setting(self, n: int) -> None:
        """Raise unless the sum of n inputs at the bound stays below 2^63 (does not wrap)."""
        reach = n * math.ceil(self.bound * self.scale)  # the largest |encoded sum|, exactly
        if reach >= _HALF_RING:
            raise ValueError(
                f"secure sum could overflow: {n} clients × bound {self.bound:g} × "
                f"2^{self.frac_bits} (frac_bits) ≥ 2^63; lower frac_bits or bound, or sum "
                "fewer clients at a time"
            )

    def encode(self, x: np.ndarray, *, client: int) -> np.ndarray:
        """x (1-D float) as uint64 ring elements; raises, naming `client`, outside the bound."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"client {client}: input must be a 1-D vector, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"client {client}: input has NaN or infinite values")
        peak = float(np.abs(x).max(initial=0.0))
        if peak > self.bound:
            raise ValueError(
                f"client {client}: input reaches |x| = {peak:g}, above the agreed bound "
                f"{self.bound:g}"
            )
        return np.rint(x * self.scale).astype(np.int64).view(np.uint64)

    def decode(self, ring: np.ndarray) -> np.ndarray:
        """A ring element (one input or a sum of them) back to float64."""
        return np.asarray(ring, dtype=np.uint64).view(np.int64).astype(np.float64) / self.scale
