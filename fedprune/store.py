"""The run folder: `<store>/<experiment>/<run>/` with the config, the global model after each
round, the final model and the metrics. Every write is atomic (temp file + rename), so a crash
never leaves a half-written model where the last good one was."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fedprune.pruning import Mask, Weights

MASK_PREFIX = "mask::"


def model_bytes(weights: Weights, mask: Mask) -> bytes:
    """Safetensors (never pickle), the mask beside the weights as bool tensors."""
    tensors = {name: t.contiguous() for name, t in weights.items()}
    tensors.update({MASK_PREFIX + name: keep.contiguous() for name, keep in mask.items()})
    return st_save(tensors)


def model_from_bytes(data: bytes) -> tuple[Weights, Mask]:
    tensors = st_load(data)
    weights = {k: v for k, v in tensors.items() if not k.startswith(MASK_PREFIX)}
    mask = {k.removeprefix(MASK_PREFIX): v for k, v in tensors.items() if k.startswith(MASK_PREFIX)}
    return weights, mask


class RunFolder:
    def __init__(self, root: str | Path, experiment: str, run_id: str):
        self.path = Path(root) / experiment / run_id
        self.path.mkdir(parents=True, exist_ok=True)

    def write_bytes(self, relative: str, data: bytes) -> Path:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, staged = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(staged, target)
        except BaseException:
            Path(staged).unlink(missing_ok=True)
            raise
        return target

    def write_json(self, relative: str, value: object) -> Path:
        return self.write_bytes(relative, json.dumps(value, indent=2).encode())

    def save_round(self, round_: int, weights: Weights, mask: Mask) -> Path:
        return self.write_bytes(
            f"rounds/round-{round_:04d}.safetensors", model_bytes(weights, mask)
        )

    def load_round(self, round_: int) -> tuple[Weights, Mask]:
        return model_from_bytes((self.path / f"rounds/round-{round_:04d}.safetensors").read_bytes())
