"""What a received payload must be before the codec builds tensors from it: the dtypes and
codings a layout may name, its counts and scale, and (for a server decoding an upload) the
global model's tensor names, shapes and dtypes. Each failure is a PayloadError, raised
before anything larger than the payload itself is allocated."""

from __future__ import annotations

import math

import torch

from fedprune.pruning.masks import Weights

VALUE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "int8": torch.int8}
"""The value precisions a payload may carry (`compression.values`) and their stored dtypes."""
MAX_HEADER = 16 << 20
"""A payload's JSON header is a line per tensor: far below this for any real model."""
DTYPES = {
    str(t)[6:]: t
    for t in (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
              torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)
}  # fmt: skip
"""The tensor dtypes a payload may name (never complex, never an arbitrary attribute)."""
CODINGS = ("raw", "dense", "sparse", "values")

Expected = dict[str, tuple[tuple[int, ...], torch.dtype]]
"""What a receiver expects of a payload: tensor name → (shape, dtype), the global model's."""


class PayloadError(ValueError):
    """A payload that is malformed or not the model the receiver expects: raised before
    anything larger than the payload itself is allocated."""


def expected_of(weights: Weights) -> Expected:
    return {name: (tuple(t.shape), t.dtype) for name, t in weights.items()}


def check_entry(entry: dict) -> dict:
    """An entry whose coding, dtypes, counts and scale are ones `_encode` writes."""
    if entry["c"] not in CODINGS or entry["dtype"] not in DTYPES:
        raise ValueError(f"coding {entry['c']!r} or dtype {entry['dtype']!r}")
    if any(d < 0 for d in entry["shape"]) or not 0 <= entry.get("n", 0) <= math.prod(
        entry["shape"]
    ):
        raise ValueError("negative dimensions or kept count")
    if entry["c"] != "raw" and entry.get("v") not in VALUE_DTYPES:
        raise ValueError(f"value precision {entry.get('v')!r}")
    if "q" in entry and not (math.isfinite(entry["q"]) and entry["q"] >= 0):
        raise ValueError(f"scale {entry['q']}")
    return entry


def check_layout(layout: dict[str, dict], expected: Expected) -> None:
    missing, extra = set(expected) - set(layout), set(layout) - set(expected)
    if missing or extra:
        raise PayloadError(
            f"tensors missing: {sorted(missing)[:5]}, unexpected: {sorted(extra)[:5]}"
        )
    for name, entry in layout.items():
        shape, dtype = expected[name]
        if tuple(entry["shape"]) != shape or DTYPES[entry["dtype"]] != dtype:
            raise PayloadError(
                f"tensor {name!r} is {entry['dtype']} {entry['shape']}, the model's is "
                f"{str(dtype)[6:]} {list(shape)}"
            )


def stored_tensor(tensors: dict, key: str, dtype: torch.dtype, count: int | None) -> torch.Tensor:
    """The stored tensor `key`, flat, of `dtype` and (unless None) `count` entries."""
    tensor = tensors.get(key)
    if tensor is None or tensor.dtype != dtype or (count is not None and tensor.numel() != count):
        got = "none" if tensor is None else f"{tensor.dtype} × {tensor.numel()}"
        raise PayloadError(f"stored {key!r}: expected {dtype} × {count}, got {got}")
    return tensor.reshape(-1)
