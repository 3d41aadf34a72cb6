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

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Protocol

from pydantic import Field, model_validator
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fedprune.errors import UserError
from fedprune.pruning.masks import Mask, Weights
from fedprune.registry import Params

MASK_PREFIX = "mask::"
MANIFEST = "manifest.json"
ACCESS_KEY_ENV = "AWS_ACCESS_KEY_ID"
SECRET_KEY_ENV = "AWS_SECRET_ACCESS_KEY"
SESSION_TOKEN_ENV = "AWS_SESSION_TOKEN"
S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$")


class S3Config(Params):
    """Where `store: s3://BUCKET/PREFIX` lives. Credentials are never read from here: they come
    from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN if set)."""

    endpoint: str | None = None
    """host:port of the S3 or MinIO server, e.g. `minio:9000` (no scheme: see `secure`)."""
    region: str | None = None
    secure: bool = True
    """TLS (https). Set false for a plain-http MinIO inside the cluster."""
    retries: Annotated[int, Field(ge=0)] = 5
    """Transient errors (connection, 5xx) are retried this often with exponential backoff."""
    backoff_s: Annotated[float, Field(ge=0.0)] = 0.2
    timeout_s: Annotated[float, Field(gt=0.0)] = 60.0

    @model_validator(mode="after")
    def _host_port(self) -> S3Config:
        if self.endpoint is not None and "://" in self.endpoint:
            raise ValueError(
                f"s3.endpoint '{self.endpoint}' must be host:port without a scheme "
                "(use s3.secure for TLS)"
            )
        return self


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


class S3Backend:
    """A bucket and key prefix on S3 or MinIO. Transient failures (connection errors, 5xx) are
    retried with exponential backoff by urllib3's `Retry`, which the `minio` client is built on;
    what remains is a permanent error, reported with what to check."""

    def __init__(
        self, bucket: str, prefix: str, cfg: S3Config, *, access_key: str, secret_key: str
    ):
        import certifi
        import urllib3
        from minio import Minio

        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=cfg.timeout_s, read=cfg.timeout_s),
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(
                total=cfg.retries,
                backoff_factor=cfg.backoff_s,
                status_forcelist=[500, 502, 503, 504],
            ),
        )
        self.endpoint = cfg.endpoint
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.location = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.client = Minio(
            cfg.endpoint,
            access_key=access_key,
            secret_key=secret_key,
            session_token=os.environ.get(SESSION_TOKEN_ENV),
            secure=cfg.secure,
            region=cfg.region,
            http_client=http,
        )
        with self._errors("checking the bucket"):
            found = self.client.bucket_exists(bucket)
        if not found:
            raise StoreError(
                f"bucket '{bucket}' does not exist at {self._where()}: create it "
                "(e.g. `mc mb`) or fix the bucket in `store`"
            )

    def _where(self) -> str:
        return f"{'https' if self.client._base_url.is_https else 'http'}://{self.endpoint}"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn the client's exceptions into messages that say which problem and what to check."""
        from minio.error import S3Error
        from urllib3.exceptions import HTTPError

        try:
            yield
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchObject"):
                raise MissingObject(f"{self.location}: {error.resource} does not exist") from None
            if error.code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"):
                raise StoreError(
                    f"S3 at {self._where()} rejected the credentials while {doing} "
                    f"({error.code}): check {ACCESS_KEY_ENV} and {SECRET_KEY_ENV}"
                ) from None
            if error.code == "NoSuchBucket":
                raise StoreError(
                    f"bucket '{self.bucket}' does not exist at {self._where()}: create it "
                    "or fix the bucket in `store`"
                ) from None
            raise StoreError(
                f"S3 at {self._where()} failed while {doing}: {error.code}: {error.message}"
            ) from None
        except HTTPError as error:
            raise StoreError(
                f"S3 endpoint {self._where()} unreachable while {doing} (gave up after "
                f"retries: {error.__class__.__name__}): check `s3.endpoint`, `s3.secure` and "
                "that the server is running"
            ) from None

    def put(self, key: str, data: bytes) -> None:
        import io

        with self._errors(f"writing {key}"):
            self.client.put_object(self.bucket, self._key(key), io.BytesIO(data), len(data))

    def get(self, key: str) -> bytes:
        with self._errors(f"reading {key}"):
            response = self.client.get_object(self.bucket, self._key(key))
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def list(self, prefix: str) -> list[str]:
        start = len(self._key(""))
        with self._errors(f"listing {prefix}"):
            found = self.client.list_objects(self.bucket, self._key(prefix), recursive=True)
            return sorted(obj.object_name[start:] for obj in found)


def open_backend(store: str, s3: S3Config) -> Backend:
    """`s3://BUCKET/PREFIX` → S3 (credentials from the environment only); anything else is a
    local folder."""
    if not store.startswith("s3://"):
        return LocalBackend(store)
    match = S3_URI.match(store)
    if match is None:
        raise StoreError(f"store: '{store}' is not s3://BUCKET/PREFIX with a valid bucket name")
    if s3.endpoint is None:
        raise StoreError("s3.endpoint: required when `store` is s3://… (e.g. minio:9000)")
    missing = [name for name in (ACCESS_KEY_ENV, SECRET_KEY_ENV) if not os.environ.get(name)]
    if missing:
        raise StoreError(
            f"store {store} needs S3 credentials in the environment: set {' and '.join(missing)} "
            "(never in the config file)"
        )
    return S3Backend(
        match["bucket"],
        match["prefix"] or "",
        s3,
        access_key=os.environ[ACCESS_KEY_ENV],
        secret_key=os.environ[SECRET_KEY_ENV],
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class RunStore:
    """One run's objects under `<experiment>/<run id>/`, the same on every backend."""

    backend: Backend
    experiment: str
    run_id: str

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
        entries = json.loads(self.read(base + MANIFEST))["objects"]
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
