"""The artifact store: one layout, two backends (a local folder, or S3/MinIO via `minio`).

Layout under `<store>/<experiment>/<run id>/`:

    config.yaml  partition.json
    rounds/0001/model.safetensors  updates.json  metrics.json  state.json  manifest.json
                state/personal/client-000003.bin …  (client state blobs: LotteryFL's masks)
    …
    model.safetensors  metrics.json  accuracy_vs_*.png  manifest.json

A group of objects (a round, or the run's final outputs) is published by writing its objects
first and a manifest with the sha256 of each last. Readers trust only groups with a manifest and
every load verifies the checksums, so a crash or a failing server never leaves a half-written
round that looks complete. Models are safetensors; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from safetensors.torch import save as st_save

from fedprune.errors import UserError
from fedprune.io.tensors import st_load
from fedprune.pruning.masks import Mask, Weights

MASK_PREFIX = "mask::"
STATE_PREFIX = "strategy::"
"""Tensors of the server strategy's state, beside a round's model (never in the final one)."""
KEPT_PREFIX, SHAPE_PREFIX = "kept::", "shape::"
"""A compact model's kept values and shapes (`compact_model_bytes`)."""
ROUNDS_BEFORE = "rounds_before"
"""Metadata key: a warm-started run's model counts the rounds it was trained for before."""
MANIFEST = "manifest.json"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
"""Experiment names and run ids: one folder, never `.`, `..` or a path."""


def folder_name_problem(name: str) -> str | None:
    """Why `name` cannot be an experiment's or a run's folder, or None."""
    if SAFE_NAME.match(name):
        return None
    return (
        f"{name!r} is not a folder name: letters, digits, '.', '_', '-', starting with a "
        "letter or digit, at most 100 characters"
    )


def folder_problem(path: Path) -> str | None:
    """Why files cannot be written under the folder `path` (made if missing), or None: the
    nearest part of it that exists must be a writable folder."""
    for folder in (path, *path.parents):
        if not folder.exists():
            continue
        if not folder.is_dir():
            return f"{folder} is a file, not a folder"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"{folder} is not writable"
        return None
    return None


def model_bytes(
    weights: Weights, mask: Mask, state: Weights | None = None, *, rounds_before: int = 0
) -> bytes:
    """Safetensors (never pickle), the mask beside the weights as bool tensors, and a round's
    strategy state beside them; `rounds_before` (the rounds earlier runs trained the model
    for, `rounds_before_of`) in the header's metadata when there were any."""
    tensors = {name: t.contiguous() for name, t in weights.items()}
    tensors.update({MASK_PREFIX + name: keep.contiguous() for name, keep in mask.items()})
    tensors.update({STATE_PREFIX + name: t.contiguous() for name, t in (state or {}).items()})
    return st_save(tensors, {ROUNDS_BEFORE: str(rounds_before)} if rounds_before else None)


def rounds_before_of(data: bytes) -> int:
    """How many rounds of earlier runs a model of `model_bytes` continues (0 for none)."""
    length = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + length]).get("__metadata__") or {}
    return int(metadata.get(ROUNDS_BEFORE, 0))


def compact_model_bytes(weights: Weights, mask: Mask) -> bytes:
    """The final model as it is worth storing: a masked tensor as its kept values
    (`kept::`), its mask as packed bits and its shape; unmasked tensors as they are. At 90%
    sparsity about 7x smaller than `model_bytes`; `model_from_bytes` reads both."""
    tensors: Weights = {}
    for name, tensor in weights.items():
        keep = mask.get(name)
        if keep is None:
            tensors[name] = tensor.contiguous()
            continue
        bits = np.packbits(keep.reshape(-1).numpy())
        tensors[KEPT_PREFIX + name] = tensor[keep].contiguous()
        tensors[MASK_PREFIX + name] = torch.from_numpy(bits)
        tensors[SHAPE_PREFIX + name] = torch.tensor(tensor.shape, dtype=torch.int64)
    return st_save(tensors)


def model_from_bytes(data: bytes) -> tuple[Weights, Mask]:
    weights, mask, _ = model_and_state(data)
    return weights, mask


def model_and_state(data: bytes) -> tuple[Weights, Mask, Weights]:
    """Weights, mask and strategy state of `model_bytes`' output."""
    weights: Weights = {}
    mask: Mask = {}
    state: Weights = {}
    loaded = st_load(data)
    for name, kept in [(n, t) for n, t in loaded.items() if n.startswith(KEPT_PREFIX)]:
        name = name.removeprefix(KEPT_PREFIX)  # a compact model: unpack it, dense again
        shape = tuple(loaded.pop(SHAPE_PREFIX + name).tolist())
        bits = loaded.pop(MASK_PREFIX + name).numpy()
        keep = torch.from_numpy(np.unpackbits(bits, count=math.prod(shape)).astype(bool))
        keep = keep.reshape(shape)
        weights[name] = torch.zeros(shape, dtype=kept.dtype).masked_scatter_(keep, kept)
        mask[name] = keep
        del loaded[KEPT_PREFIX + name]
    for name, tensor in loaded.items():
        if name.startswith(MASK_PREFIX):
            mask[name.removeprefix(MASK_PREFIX)] = tensor
        elif name.startswith(STATE_PREFIX):
            state[name.removeprefix(STATE_PREFIX)] = tensor
        else:
            weights[name] = tensor
    return weights, mask, state


class StoreError(UserError):
    """The store cannot be used as configured (credentials, bucket, endpoint, missing run)."""


class MissingObject(StoreError):
    """An object the caller asked for is not in the store."""


class CorruptObject(StoreError):
    """An object's bytes do not match the sha256 its manifest recorded."""


class Backend(Protocol):
    """Flat keys (`a/b/c`) to bytes; `location` names the store in messages."""

    location: str

    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def list(self, prefix: str) -> list[str]: ...


class LocalBackend:
    """A folder; every write is a temp file + fsync + rename, so a reader never sees half."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.location = str(self.root)

    def put(self, key: str, data: bytes) -> None:
        target = self.root / key
        staged = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, staged = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(staged, target)
        except BaseException as error:
            if staged is not None:
                Path(staged).unlink(missing_ok=True)
            if isinstance(error, OSError):  # disk full, read-only, permissions
                raise StoreError(
                    f"cannot write {target}: {error.strerror or error}. Free space or fix the "
                    "folder's permissions, then resume the run: what was published is intact"
                ) from None
            raise

    def get(self, key: str) -> bytes:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            raise MissingObject(f"{self.location}/{key} does not exist") from None

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class RunStore:
    """One run's objects under `<experiment>/<run id>/`, the same on every backend."""

    backend: Backend
    experiment: str
    run_id: str

    def __post_init__(self) -> None:
        for what, name in (("experiment", self.experiment), ("run id", self.run_id)):
            if problem := folder_name_problem(name):
                raise StoreError(f"{what} {problem}")

    @property
    def prefix(self) -> str:
        return f"{self.experiment}/{self.run_id}"

    @property
    def location(self) -> str:
        return f"{self.backend.location}/{self.prefix}"

    def write(self, name: str, data: bytes) -> None:
        self.backend.put(f"{self.prefix}/{name}", data)

    def read(self, name: str) -> bytes:
        return self.backend.get(f"{self.prefix}/{name}")

    def publish(self, folder: str, objects: dict[str, bytes], **info: object) -> None:
        """Objects first, the manifest (sha256 and size of each, plus `info`) last."""
        for name, data in objects.items():
            self.write(f"{folder}/{name}" if folder else name, data)
        entries = {
            name: {"sha256": sha256(data), "bytes": len(data)} for name, data in objects.items()
        }
        manifest = {**info, "objects": entries}
        self.write(f"{folder}/{MANIFEST}" if folder else MANIFEST, json.dumps(manifest).encode())

    def load(self, folder: str, names: list[str] | None = None) -> dict[str, bytes]:
        """Objects of a published group (all, or those in `names`), each checked against its
        manifest's sha256."""
        base = f"{folder}/" if folder else ""
        entries = self.manifest(folder)["objects"]
        if names is not None:
            missing = [name for name in names if name not in entries]
            if missing:
                raise MissingObject(f"{self.location}/{base}: no {', '.join(missing)}")
            entries = {name: entries[name] for name in names}
        out = {}
        for name, entry in entries.items():
            data = self.read(base + name)
            if sha256(data) != entry["sha256"]:
                raise CorruptObject(
                    f"{self.location}/{base}{name} is corrupt: sha256 {sha256(data)}, its "
                    f"manifest says {entry['sha256']}"
                )
            out[name] = data
        return out

    def manifest(self, folder: str) -> dict:
        """A published group's manifest, checked to be one (a torn or edited file is not)."""
        name = f"{folder}/{MANIFEST}" if folder else MANIFEST
        try:
            manifest = json.loads(self.read(name))
            if not isinstance(manifest, dict) or not all(
                isinstance(e, dict) and {"sha256", "bytes"} <= e.keys()
                for e in manifest["objects"].values()
            ):
                raise ValueError("not a manifest of objects")
        except (ValueError, KeyError, AttributeError) as error:
            fallback = f", or delete {folder}/ to continue from the round before" if folder else ""
            raise CorruptObject(
                f"{self.location}/{name} is corrupt ({error}): restore it{fallback}"
            ) from None
        return manifest

    def publish_round(self, round_: int, objects: dict[str, bytes]) -> None:
        """`published_at` lets warm starts find an experiment's newest model across runs."""
        self.publish(round_folder(round_), objects, round=round_, published_at=time.time())

    def load_round(self, round_: int, names: list[str] | None = None) -> dict[str, bytes]:
        return self.load(round_folder(round_), names)

    def published_rounds(self) -> list[int]:
        """Rounds that have a manifest: only these are trusted."""
        found = re.compile(rf"^{re.escape(self.prefix)}/rounds/(\d+)/{MANIFEST}$")
        keys = self.backend.list(f"{self.prefix}/rounds/")
        return sorted(int(m[1]) for k in keys if (m := found.match(k)))

    def finished(self) -> bool:
        """Whether the run's final outputs were published (their manifest exists)."""
        try:
            self.read(MANIFEST)
        except MissingObject:
            return False
        return True


def round_folder(round_: int) -> str:
    return f"rounds/{round_:04d}"
