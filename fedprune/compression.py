"""Model payloads as real serialised bytes (safetensors: no pickle, exact for fp32).

`dense` sends every tensor whole. `sparse` sends each masked tensor as flat indices + values
when that is smaller than the dense tensor, and whole otherwise. Byte counts everywhere come
from `len()` of these payloads, never from parameter counts.
"""

from __future__ import annotations

import json
import math

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fedprune.config import CompressionConfig
from fedprune.pruning import Mask, Weights

FORMAT = "fedprune.payload/1"
VALUE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def _index_dtype(numel: int) -> torch.dtype:
    if numel <= 2**8:
        return torch.uint8
    if numel <= 2**15:
        return torch.int16
    return torch.int32


def encode(weights: Weights, mask: Mask, cfg: CompressionConfig) -> bytes:
    """Serialise `weights`; tensors named in `mask` may travel sparse."""
    value_dtype = VALUE_DTYPES[cfg.values]
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict] = {}
    for name, tensor in weights.items():
        values = tensor.detach().to(value_dtype) if tensor.is_floating_point() else tensor
        entry = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}
        keep = mask.get(name)
        if cfg.encoding == "sparse" and keep is not None:
            index_dtype = _index_dtype(tensor.numel())
            kept = int(keep.sum())
            sparse_bytes = kept * (index_dtype.itemsize + value_dtype.itemsize)
            if sparse_bytes < tensor.numel() * value_dtype.itemsize:
                indices = keep.reshape(-1).nonzero().squeeze(1)
                tensors[f"{name}::idx"] = indices.to(index_dtype)
                tensors[f"{name}::val"] = values.reshape(-1)[indices].contiguous()
                layout[name] = {**entry, "coding": "sparse"}
                continue
        tensors[name] = values.contiguous()
        layout[name] = {**entry, "coding": "dense", "masked": keep is not None}
    return st_save(tensors, metadata={"format": FORMAT, "layout": json.dumps(layout)})


def decode(payload: bytes) -> tuple[Weights, Mask]:
    """Weights in their original dtype, and the mask of every masked tensor.

    A sparse tensor's mask is its index set; a masked tensor sent dense has mask `w != 0`.
    """
    tensors = st_load(payload)
    # safetensors keeps user metadata in its JSON header: 8-byte little-endian length, then JSON.
    header_len = int.from_bytes(payload[:8], "little")
    metadata = json.loads(payload[8 : 8 + header_len])["__metadata__"]
    if metadata.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} payload")
    weights: Weights = {}
    mask: Mask = {}
    for name, entry in json.loads(metadata["layout"]).items():
        dtype = getattr(torch, entry["dtype"])
        if entry["coding"] == "sparse":
            indices = tensors[f"{name}::idx"].long()
            flat = torch.zeros(math.prod(entry["shape"]), dtype=dtype)
            flat[indices] = tensors[f"{name}::val"].to(dtype)
            keep = torch.zeros(flat.numel(), dtype=torch.bool)
            keep[indices] = True
            weights[name] = flat.view(entry["shape"])
            mask[name] = keep.view(entry["shape"])
        else:
            weights[name] = tensors[name].to(dtype)
            if entry["masked"]:
                mask[name] = weights[name] != 0
    return weights, mask
