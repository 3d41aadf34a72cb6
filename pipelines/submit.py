"""Submit and schedule the pipeline on a Kubeflow Pipelines cluster through `kfp.Client`."""

import contextlib
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
from fedprune.errors import UserError
from pipelines.federated_pruning import compile_pipeline

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


def connect(host: str, namespace: str | None = None, timeout_s: float = 10.0) -> kfp.Client:
    """A client for `host`, after a quick reachability check (kfp.Client itself retries its
    health check for ~25 s before failing with a traceback)."""
    host = host.rstrip("/")
    try:
        urllib.request.urlopen(f"{host}/apis/v2beta1/healthz", timeout=timeout_s).close()
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
    with api_errors(host):
        return kfp.Client(host=host, namespace=namespace)


@dataclass(frozen=True)
class Submitted:
    id: str
    url: str


def _compiled(cfg: ExperimentConfig, folder: str) -> str:
    return str(compile_pipeline(cfg, Path(folder) / f"fedprune-{cfg.experiment}.yaml"))


def submit(
    cfg: ExperimentConfig,
    host: str,
    *,
    experiment: str | None = None,
    namespace: str | None = None,
    run_name: str | None = None,
) -> Submitted:
    client = connect(host, namespace)
    with tempfile.TemporaryDirectory() as folder, api_errors(host):
        result = client.create_run_from_pipeline_package(
            _compiled(cfg, folder),
            run_name=run_name or f"{cfg.experiment}-s{cfg.seed}",
            experiment_name=experiment or cfg.experiment,
            namespace=namespace,
            service_account=cfg.kubeflow.service_account,
        )
    return Submitted(result.run_id, f"{host.rstrip('/')}/#/runs/details/{result.run_id}")


def schedule(
    cfg: ExperimentConfig,
    host: str,
    cron: str,
    *,
    max_concurrency: int = 1,
    catchup: bool = True,
    experiment: str | None = None,
    namespace: str | None = None,
    name: str | None = None,
) -> Submitted:
    validate_cron(cron)
    if max_concurrency < 1:
        raise UserError(f"--max-concurrency must be >= 1, got {max_concurrency}")
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
