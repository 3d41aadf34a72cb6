"""How an experiment runs as a Kubeflow pipeline: pods' resources, the GPU aggregator,
credentials by reference, the data volume (ignored by `fedprune run`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from fedprune.registry import Params


class ResourcesConfig(Params):
    """Kubernetes requests and limits of one pod (quantities as Kubernetes writes them)."""

    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "2Gi"
    memory_limit: str = "4Gi"


class TolerationConfig(Params):
    key: str
    operator: Literal["Equal", "Exists"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"


class AggregatorConfig(Params):
    """Where the aggregation pods run: a GPU node (the default) or any CPU node."""

    device: Literal["gpu", "cpu"] = "gpu"
    accelerator_type: str = "nvidia.com/gpu"
    accelerator_limit: Annotated[int, Field(ge=1)] = 1
    node_selector: dict[str, str] = {"nvidia.com/gpu.present": "true"}
    tolerations: list[TolerationConfig] = [TolerationConfig(key="nvidia.com/gpu")]
    resources: ResourcesConfig = ResourcesConfig(memory_request="4Gi", memory_limit="16Gi")
    timeout_s: Annotated[int, Field(ge=1)] = 3600


class KubeflowConfig(Params):
    """How the experiment runs as a Kubeflow pipeline (ignored by `fedprune run`)."""

    image: str = "fedprune:0.1.0"
    """The project image every component runs in (its `base_image`)."""
    clients_per_pod: Annotated[int, Field(ge=1)] = 10
    """Clients trained one after another in one pod: 1,000 clients need not mean 1,000 pods."""
    parallelism: Annotated[int, Field(ge=1)] = 10
    """At most this many client pods of a round run at once."""
    client_resources: ResourcesConfig = ResourcesConfig()
    client_retries: Annotated[int, Field(ge=0)] = 2
    client_timeout_s: Annotated[int, Field(ge=1)] = 3600
    aggregator: AggregatorConfig = AggregatorConfig()
    service_account: str | None = "fedprune-pipeline"
    """Kubernetes ServiceAccount of the run's pods (the chart creates `fedprune-pipeline`);
    null leaves KFP's default (`pipeline-runner`)."""
    credentials_secret: str = "fedprune-credentials"
    """Kubernetes Secret mounted as environment variables; values never enter the YAML."""
    secret_env: dict[str, str] = {
        "s3-access-key": "AWS_ACCESS_KEY_ID",
        "s3-secret-key": "AWS_SECRET_ACCESS_KEY",
        "mlflow-username": "MLFLOW_TRACKING_USERNAME",
        "mlflow-password": "MLFLOW_TRACKING_PASSWORD",
    }
    """Secret key → environment variable, for every component."""
    data_pvc: str | None = None
    """PersistentVolumeClaim holding the data sets (`fedprune data fetch` output), mounted
    read-only-by-convention at `data_path` in every pod; the image does not carry data."""
    data_path: str = "/data"


def dag_shape(cfg) -> dict[str, object]:
    """The settings a compiled pipeline has fixed (rounds are unrolled, client groups fanned
    out, pod settings written in): a run whose `config_json` changes any of them cannot run
    as compiled, so its first task refuses it (`check_dag_shape`)."""
    shape: dict[str, object] = {"rounds": cfg.rounds, "clients per round": cfg.clients_per_round()}
    shape |= {f"kubeflow.{k}": v for k, v in cfg.kubeflow.model_dump(mode="json").items()}
    return shape


def check_dag_shape(cfg, compiled: dict[str, object]) -> None:
    """Raise a ConfigError naming every DAG-shaping setting `cfg` changes from `compiled`."""
    from fedprune.config import ConfigError

    ours = dag_shape(cfg)
    changed = sorted(k for k in ours.keys() | compiled.keys() if ours.get(k) != compiled.get(k))
    if changed:
        raise ConfigError(
            "config_json changes settings the pipeline was compiled with: "
            + ", ".join(
                f"{k} ({compiled.get(k)!r} compiled, {ours.get(k)!r} given)" for k in changed
            )
            + "; recompile (`fedprune compile`) or submit the config instead"
        )
