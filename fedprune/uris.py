"""Settings that hold a URI or an endpoint never hold credentials: a config is copied into the
compiled pipeline YAML, the MLflow params and the logs, so a password inside a URI would be
too. Credentials come from the environment instead."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl, urlsplit

from pydantic import AfterValidator, ValidationInfo

SECRET_QUERY_KEYS = ("password", "passwd", "secret", "token", "key", "signature", "credential")
ENVIRONMENT = {
    "tracking": "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)",
}
S3_ENVIRONMENT = "FEDPRUNE_S3_ACCESS_KEY and FEDPRUNE_S3_SECRET_KEY"


def credentials_in(value: str) -> str | None:
    """What in `value` looks like a credential (`user:password@`, `?token=`), or None."""
    parts = urlsplit(value if "://" in value else f"//{value}")
    if "@" in parts.netloc:
        return "a user name or password before '@'"
    for key, _ in parse_qsl(parts.query):
        if any(word in key.lower() for word in SECRET_QUERY_KEYS):
            return f"a '{key}' query parameter"
    return None


def _no_credentials(value: str | None, info: ValidationInfo) -> str | None:
    if value is None:
        return value
    found = credentials_in(value)
    if found is not None:
        use = ENVIRONMENT.get(info.field_name or "", S3_ENVIRONMENT)
        raise ValueError(
            f"holds credentials ({found}); they would be copied into the compiled pipeline, "
            f"the MLflow params and the logs. Remove them and set {use} in the environment "
            "(on a cluster: the credentials Secret)"
        )
    return value


Uri = Annotated[str, AfterValidator(_no_credentials)]
"""A URI, path or host:port setting, refused when it carries credentials."""
