"""File data sets in S3 (`data.path: s3://BUCKET/PREFIX`): the objects under the prefix are
copied into the data cache (`$FEDPRUNE_DATA/s3/BUCKET/PREFIX`) through the store's `minio`
client and credentials, every time a process loads the data (so a changed object is never
read stale), and the data set then reads the local copy in the same layout. A pod placed at
one site copies only that site's folder, the server's pods only the server's test set
(`View`)."""

from __future__ import annotations

import os
from pathlib import Path

from fedprune.io.s3 import S3Config, open_backend, read_uri
from fedprune.tasks.datasets import DataParams, data_dir
from fedprune.tasks.datasets.files import EVERYTHING, View


def mirror(uri: str, s3: S3Config, *, top_only: bool = False) -> Path:
    """A local copy of the file or folder at `uri` (s3://…); `top_only`: the objects directly
    under it, none in sub-folders (the server's test set, not the sites' folders)."""
    target = data_dir() / "s3" / uri.removeprefix("s3://")
    if uri.endswith(".npz"):  # one file
        _write(target, read_uri(uri, s3))
        return target
    backend = open_backend(uri, s3)
    for key in backend.list(""):
        if top_only and "/" in key:
            continue
        _write(target / key, backend.get(key))
    return target


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_bytes(data)
    os.replace(staged, path)


def localize(params: DataParams, s3: S3Config, view: View = EVERYTHING) -> tuple[DataParams, View]:
    """`params` and `view` with s3:// paths replaced by local copies of what `view` may read
    (local paths unchanged)."""
    path = getattr(params, "path", None)
    remote = isinstance(path, str) and path.startswith("s3://")
    if view.site is not None:
        own = view.path or (f"{path}/clients/{view.site}" if remote else None)
        if own is not None and own.startswith("s3://"):
            view = View(site=view.site, path=str(mirror(own, s3)))
        return params, view
    if not remote:
        return params, view
    assert isinstance(path, str)
    return params.model_copy(update={"path": str(mirror(path, s3, top_only=view.server))}), view
