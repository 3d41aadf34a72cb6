"""Submit and schedule the pipeline on a Kubeflow Pipelines cluster through `kfp.Client`."""

import contextlib
import json
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kfp
from kfp_server_api.exceptions import ApiException

from fedprune.config import ExperimentConfig
from fedprune.engine.round import resume_state
from fedprune.errors import UserError
from fedprune.io.publish import run_store
from pipelines.federated_pruning import compile_pipeline, rounds_per_run, segment_after, segments

MIN_KFP_BACKEND = (2, 14, 0)
"""Oldest KFP backend the compiled pipeline runs on: artifact `dsl.Collected` needs 2.14,
ParallelFor parallelism 2.4."""
SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
"""Where Kubeflow projects a pod's ServiceAccount token for the Pipelines API (audience
`pipelines.kubeflow.org`); kfp.Client skips it when given a host, so fedprune sends it."""
TAG_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")

log = logging.getLogger(__name__)

CRON_FIELDS = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
CRON_TOKEN = re.compile(r"^(\*|\?|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?$")


class KubeflowError(UserError):
    """The Kubeflow Pipelines API is unreachable or refused the request."""


def validate_cron(expression: str) -> str:
    """KFP's scheduler wants 6 fields, seconds first (robfig/cron), e.g. `0 0 2 * * *`."""
    fields = expression.split()
    expected = " ".join(CRON_FIELDS)
    if len(fields) != len(CRON_FIELDS):
        raise UserError(
            f"--cron '{expression}' has {len(fields)} fields; KFP needs 6, seconds first: "
            f"'{expected}' (e.g. '0 0 2 * * *' is every day at 02:00)"
        )
    for name, field in zip(CRON_FIELDS, fields, strict=True):
        if not all(CRON_TOKEN.match(part) for part in field.split(",")):
            raise UserError(f"--cron '{expression}': the {name} field '{field}' is not valid cron")
    return expression


@contextlib.contextmanager
def api_errors(host: str) -> Iterator[None]:
    try:
        yield
    except ApiException as error:
        reason = (error.body or error.reason or "").strip()[:300]
        raise KubeflowError(
            f"Kubeflow Pipelines at {host} answered {error.status}: {reason}"
        ) from None


def version_of(tag: object) -> tuple[int, int, int] | None:
    """`2.14.3` or `v2.14.3` as (2, 14, 3); None for a dev, `unknown` or commit build."""
    found = TAG_VERSION.match(tag) if isinstance(tag, str) else None
    if not found:
        return None
    major, minor, patch = found.groups()
    return int(major), int(minor), int(patch or 0)


def check_backend(host: str, health: dict, namespace: str | None) -> None:
    """Refuse a backend that cannot run the pipeline, before anything is uploaded: one
    older than MIN_KFP_BACKEND fails mid-run, and a multi-user one refuses runs outside a
    profile namespace. A missing tag_name, or one that is not a version (`dev`, `latest`, a
    commit build), only logs a warning and proceeds: such builds cannot be compared."""
    minimum = ".".join(map(str, MIN_KFP_BACKEND))
    tag = health.get("tag_name")
    version = version_of(tag)
    if version is None:
        log.warning(
            "Kubeflow Pipelines at %s reports version %r, not a release number: cannot check "
            "it is %s or newer; proceeding",
            host,
            tag,
            minimum,
        )
    elif version < MIN_KFP_BACKEND:
        raise KubeflowError(
            f"Kubeflow Pipelines at {host} is version {tag}; fedprune needs {minimum} or newer "
            "(artifact dsl.Collected needs 2.14): upgrade the cluster's Kubeflow Pipelines"
        )
    if health.get("multi_user") is True and not namespace:
        raise UserError(
            f"Kubeflow Pipelines at {host} is multi-user: pass --namespace, your profile "
            "namespace (e.g. kubeflow-user-example-com)"
        )


def token_path() -> str | None:
    """The pod's projected ServiceAccount token for the Pipelines API, if there is one: the
    file that KF_PIPELINES_SA_TOKEN_PATH names, else Kubeflow's default path."""
    named = os.environ.get(SA_TOKEN_ENV)
    if named and os.path.isfile(named):
        return named
    if named:
        log.warning("%s=%s is not a file; ignoring it", SA_TOKEN_ENV, named)
    return SA_TOKEN_PATH if os.path.isfile(SA_TOKEN_PATH) else None


def read_token(path: str) -> str:
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError as error:
        raise UserError(f"cannot read the ServiceAccount token {path}: {error.strerror}") from None


def healthz(host: str, token: str | None, timeout_s: float) -> dict:
    """GET healthz with a short timeout (kfp.Client itself retries its health check for
    ~25 s before failing with a traceback); its JSON names the version and the mode."""
    request = urllib.request.Request(f"{host}/apis/v2beta1/healthz")
    if token:
        request.add_header("Authorization", f"Bearer {read_token(token)}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            raise KubeflowError(
                f"Kubeflow Pipelines at {host} refused access ({error.code}): check credentials"
            ) from None
        raise KubeflowError(
            f"Kubeflow Pipelines at {host}: health check answered {error.code}"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise KubeflowError(
            f"cannot reach Kubeflow Pipelines at {host} ({reason}): check --host and that the "
            "API is reachable, e.g. `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`"
        ) from None
    try:
        health = json.loads(body)
    except ValueError:
        health = None
    if not isinstance(health, dict):
        raise KubeflowError(
            f"{host}/apis/v2beta1/healthz did not answer Kubeflow Pipelines' JSON (a login "
            "page?): check --host and credentials"
        )
    return health


def connect(host: str, namespace: str | None = None, timeout_s: float = 10.0) -> kfp.Client:
    """A client for `host`, after checking the backend's version and mode (`check_backend`);
    in a pod, it sends the projected ServiceAccount token as a Bearer token."""
    host = host.rstrip("/")
    token = token_path()
    check_backend(host, healthz(host, token, timeout_s), namespace)
    credentials = kfp.client.ServiceAccountTokenVolumeCredentials(path=token) if token else None
    with api_errors(host):
        return kfp.Client(host=host, namespace=namespace, credentials=credentials)


@dataclass(frozen=True)
class Submitted:
    id: str
    url: str
    rounds: tuple[int, int] = (1, 1)
    """The rounds this KFP run holds (a segment of a longer experiment, or all of them)."""


def _compiled(cfg: ExperimentConfig, folder: str, done: int = 0) -> str:
    return str(compile_pipeline(cfg, Path(folder) / f"fedprune-{cfg.experiment}.yaml", done=done))


def published(cfg: ExperimentConfig, run_id: str) -> int:
    """How many rounds the unfinished run `run_id` has published, the config the same as the
    one it started with (what the segment that follows it starts after)."""
    _, history, _ = resume_state(run_store(cfg, run_id), cfg)
    return len(history)


def submit(
    cfg: ExperimentConfig,
    host: str,
    *,
    experiment: str | None = None,
    namespace: str | None = None,
    run_name: str | None = None,
    continue_run: str | None = None,
) -> Submitted:
    """Start a KFP run of the experiment: all of it, or when it is longer than one run holds
    (`kubeflow.rounds_per_run`) its first segment, or with `continue_run` the segment after
    that run's last published round (read from the store before anything is sent)."""
    done = published(cfg, continue_run) if continue_run else 0
    segment = segment_after(cfg, done, rounds_per_run(cfg))
    client = connect(host, namespace)
    with tempfile.TemporaryDirectory() as folder, api_errors(host):
        result = client.create_run_from_pipeline_package(
            _compiled(cfg, folder, done),
            arguments={"continue_run": continue_run} if continue_run else None,
            run_name=run_name or f"{cfg.experiment}-s{cfg.seed}",
            experiment_name=experiment or cfg.experiment,
            namespace=namespace,
            service_account=cfg.kubeflow.service_account,
        )
    url = f"{host.rstrip('/')}/#/runs/details/{result.run_id}"
    return Submitted(result.run_id, url, segment)


def schedule(
    cfg: ExperimentConfig,
    host: str,
    cron: str,
    *,
    max_concurrency: int = 1,
    catchup: bool = False,
    experiment: str | None = None,
    namespace: str | None = None,
    name: str | None = None,
) -> Submitted:
    """A recurring run; `catchup` off by default, so a schedule paused or behind for a week
    starts one run when it resumes, not one per missed slot."""
    validate_cron(cron)
    if max_concurrency < 1:
        raise UserError(f"--max-concurrency must be >= 1, got {max_concurrency}")
    if (per_run := rounds_per_run(cfg)) < cfg.rounds:
        raise UserError(
            f"rounds: a scheduled run must be one KFP run, and {cfg.rounds} rounds need "
            f"{len(segments(cfg))} (kubeflow.max_spec_kb): schedule at most {per_run} rounds; "
            "each night continues from the last with init_from: latest"
        )
    client = connect(host, namespace)
    with tempfile.TemporaryDirectory() as folder, api_errors(host):
        found = client.create_experiment(experiment or cfg.experiment, namespace=namespace)
        recurring = client.create_recurring_run(
            experiment_id=found.experiment_id,
            job_name=name or f"{cfg.experiment}-schedule",
            cron_expression=cron,
            max_concurrency=max_concurrency,
            no_catchup=not catchup,
            pipeline_package_path=_compiled(cfg, folder),
            enabled=True,
            service_account=cfg.kubeflow.service_account,
        )
    rid = recurring.recurring_run_id
    return Submitted(rid, f"{host.rstrip('/')}/#/recurringrun/details/{rid}")


def list_schedules(host: str, namespace: str | None = None) -> list[dict[str, str]]:
    client = connect(host, namespace)
    with api_errors(host):
        response = client.list_recurring_runs(page_size=100, namespace=namespace)
    return [
        {
            "id": r.recurring_run_id,
            "name": r.display_name,
            "status": r.status,
            "cron": r.trigger.cron_schedule.cron if r.trigger and r.trigger.cron_schedule else "",
        }
        for r in response.recurring_runs or []
    ]


def pause_schedule(host: str, recurring_run_id: str, namespace: str | None = None) -> None:
    client = connect(host, namespace)
    with api_errors(host):
        client.disable_recurring_run(recurring_run_id)


def delete_schedule(host: str, recurring_run_id: str, namespace: str | None = None) -> None:
    client = connect(host, namespace)
    with api_errors(host):
        client.delete_recurring_run(recurring_run_id)
