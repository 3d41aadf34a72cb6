"""Reading safetensors bytes: the one loader every payload, store object and pretrained file
goes through."""

from __future__ import annotations

import torch
from safetensors.torch import load as _load_unaligned


def st_load(payload: bytes) -> dict[str, torch.Tensor]:
    """Tensors from safetensors bytes, copied into torch's own (64-byte aligned) memory.
    safetensors' tensors sit wherever Python put each bytes object (0 or 48 mod 64, varying
    from one load to the next), and a kernel's result can depend on its input's alignment:
    the same model read twice must compute the same numbers, in the engine and in a pod."""
    return {name: tensor.clone() for name, tensor in _load_unaligned(payload).items()}
