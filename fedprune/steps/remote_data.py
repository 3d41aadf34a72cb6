"""File data sets in S3 (`data.path: s3://BUCKET/PREFIX`): the objects under the prefix are
copied into the data cache (`$FEDPRUNE_DATA/s3/BUCKET/PREFIX`) through the store's `minio`
client and credentials, every time a process loads the data (so a changed object is never
read stale), and the data set then reads the local copy in the same layout."""

from __future__ import annotations

import os
from pathlib import Path

from fedprune.io.s3 import S3Config, open_backend, read_uri
from fedprune.tasks.datasets import DataParams, data_dir


def mirror(uri: str, s3: S3Config) -> Path:
    """A local copy of the file or folder at `uri` (s3://…)."""
    target = data_dir() / "s3" / uri.removeprefix("s3://")
    if uri.endswith(".npz"):  # one file
        _write(target, read_uri(uri, s3))
        return target
    backend = open_backend(uri, s3)
    for key in backend.list(""):
        _write(target / key, backend.get(key))
    return target


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_bytes(data)
    os.replace(staged, path)


def localize(params: DataParams, s3: S3Config) -> DataParams:
    """`params` with an s3:// `path` replaced by its local copy (others unchanged)."""
    path = getattr(params, "path", None)
    if not (isinstance(path, str) and path.startswith("s3://")):
        return params
    return params.model_copy(update={"path": str(mirror(path, s3))})
