"""Pretrained starts (`init_from: <path or s3:// URI of a .safetensors state dict>`): the
model's weights from a file, checked tensor by tensor against the configured model."""

from __future__ import annotations

from safetensors import SafetensorError

from fedprune.errors import UserError
from fedprune.io.s3 import read_uri
from fedprune.io.store import StoreError
from fedprune.io.tensors import st_load as load_tensors
from fedprune.pruning.masks import Weights
from fedprune.steps.runtime import Runtime


class PretrainedError(UserError):
    """A pretrained state dict that does not fit the configured model."""


def pretrained_weights(rt: Runtime, uri: str) -> Weights:
    """The state dict at `uri`, in the model's dtypes; every tensor of the model must be there
    with its shape, and nothing else."""
    try:
        loaded = load_tensors(read_uri(uri, rt.cfg.s3))
    except StoreError as error:
        raise PretrainedError(f"init_from: {error}") from None
    except SafetensorError as error:
        raise PretrainedError(f"init_from: {uri} is not a safetensors file: {error}") from None
    own = rt.model.state_dict()
    missing = [name for name in own if name not in loaded]
    if missing:
        raise PretrainedError(
            f"init_from: {uri} lacks tensor '{missing[0]}' of model {rt.cfg.model.name}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    extra = [name for name in loaded if name not in own]
    if extra:
        raise PretrainedError(
            f"init_from: {uri} has tensor '{extra[0]}', which model {rt.cfg.model.name} does not"
        )
    for name, tensor in own.items():
        if loaded[name].shape != tensor.shape:
            raise PretrainedError(
                f"init_from: tensor '{name}' is {tuple(loaded[name].shape)} in {uri} but "
                f"{tuple(tensor.shape)} in model {rt.cfg.model.name}"
            )
    return {name: loaded[name].to(tensor.dtype) for name, tensor in own.items()}
