"""The S3 (or MinIO) backend of the artifact store, its settings, and how `store:` picks a
backend: `s3://BUCKET/PREFIX` is S3 through the `minio` client, anything else a local folder."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from fedprune.io.store import Backend, LocalBackend, MissingObject, StoreError
from fedprune.registry import Params
from fedprune.uris import Uri

ACCESS_KEY_ENV = "FEDPRUNE_S3_ACCESS_KEY"
SECRET_KEY_ENV = "FEDPRUNE_S3_SECRET_KEY"
SESSION_TOKEN_ENV = "FEDPRUNE_S3_SESSION_TOKEN"
"""The project's own names, not AWS_*: in a pipeline pod KFP's launcher reads AWS_* for its
own artifact store, which the store's keys must not replace."""
S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$")


class S3Config(Params):
    """Where `store: s3://BUCKET/PREFIX` lives. Credentials are never read from here: they come
    from FEDPRUNE_S3_ACCESS_KEY and FEDPRUNE_S3_SECRET_KEY (and FEDPRUNE_S3_SESSION_TOKEN if set)."""

    endpoint: Uri | None = None
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


def read_uri(uri: str, s3: S3Config) -> bytes:
    """One file's bytes from a local path or an `s3://BUCKET/KEY` URI (the store's client and
    credentials)."""
    if not uri.startswith("s3://"):
        path = Path(uri)
        if not path.is_file():
            raise StoreError(f"{uri}: no such file")
        return path.read_bytes()
    folder, _, name = uri.rpartition("/")
    return open_backend(folder, s3).get(name)
