"""How an experiment runs as a Kubeflow pipeline: pods' resources, the GPU aggregator,
credentials by reference, the data volume (ignored by `fedprune run`)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from fedprune.pruning.methods import METHODS
from fedprune.registry import Params
from fedprune.tasks.datasets import DATASETS, FileSource
from fedprune.uris import Uri

IMAGE = re.compile(
    r"^(?P<registry>(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|[A-Za-z0-9-]+(?=:[0-9]))"
    r"(?::[0-9]+)?)/(?P<path>[a-z0-9._/-]+?)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
"""A registry-qualified image reference: registry host (a dot, a port or `localhost`), path,
optional tag, optional digest."""


def _qualified(value: str) -> str:
    if not IMAGE.match(value):
        raise ValueError(
            f"{value!r} is not a registry-qualified image: registry host, path and a tag or "
            "digest, e.g. registry.example.com/fedprune:0.1.0 or "
            "registry.example.com/fedprune@sha256:<64 hex>"
        )
    return value


Image = Annotated[str, AfterValidator(_qualified)]


def cuda_image(kf: KubeflowConfig) -> str:
    """The GPU aggregator's image: its own, or the project image's tag with `-cuda`."""
    if kf.aggregator.image is not None:
        return kf.aggregator.image
    match = IMAGE.match(kf.image or "")
    if match is None or match["digest"] or not match["tag"]:
        raise ValueError(
            "kubeflow.aggregator.image: required with device gpu when kubeflow.image has no "
            "tag to derive the CUDA image's from (a digest, or no tag)"
        )
    return f"{kf.image}-cuda"


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
    """Where the aggregation pods run: any CPU node (the default), or with `device: gpu` a
    GPU node, in the CUDA image, failing when the pod sees no GPU (never a silent CPU run)."""

    device: Literal["gpu", "cpu"] = "cpu"
    accelerator_type: str = "nvidia.com/gpu"
    accelerator_limit: Annotated[int, Field(ge=1)] = 1
    node_selector: dict[str, str] = {}
    """Extra node labels for the GPU pod; the GPU limit alone already schedules it on a GPU
    node (GPU Operator: `nvidia.com/gpu.present: "true"`; GKE:
    `cloud.google.com/gke-accelerator: nvidia-l4`; EKS: `k8s.amazonaws.com/accelerator:
    nvidia-tesla-t4`)."""
    tolerations: list[TolerationConfig] = [TolerationConfig(key="nvidia.com/gpu")]
    """Taints of GPU nodes the GPU pod tolerates (GPU node pools are usually tainted)."""
    image: Image | None = None
    """The GPU pod's image; default `kubeflow.image` with `-cuda` appended to its tag (the
    CUDA build, images/Dockerfile.cuda)."""
    resources: ResourcesConfig = ResourcesConfig(memory_request="4Gi", memory_limit="16Gi")
    timeout_s: Annotated[int, Field(ge=1)] = 3600


class SiteConfig(Params):
    """Where one site's pods run and what they may read (`kubeflow.sites.<site>`)."""

    node_selector: dict[str, str] = {}
    """Node labels of the site's nodes: its client pods are scheduled only there."""
    tolerations: list[TolerationConfig] = []
    """Taints of the site's nodes its pods tolerate (a site's nodes are usually tainted so
    that no other pod lands there)."""
    data_pvc: str | None = None
    """The site's own data volume, mounted at `kubeflow.data_path` in its pods only (else
    `kubeflow.data_pvc`)."""
    path: Uri | None = None
    """The site's folder as its pods see it (`train.<ext>`, optionally its own `test.<ext>`):
    its own S3 prefix (s3://…) or a folder; default `<data.path>/clients/<site>`."""
    credentials_secret: str | None = None
    """The site's own Secret with its S3 keys (a MinIO user whose policy allows only the
    site's prefix), mounted in its pods instead of `kubeflow.credentials_secret`."""


class KubeflowConfig(Params):
    """How the experiment runs as a Kubeflow pipeline (ignored by `fedprune run`)."""

    image: Image | None = None
    """The project image every component runs in (its `base_image`): registry-qualified
    (`registry.example.com/fedprune:0.1.0`) or by digest (`…/fedprune@sha256:…`); required to
    compile or submit, as no default name could exist in your registry."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Of every pipeline pod; `Always` when a tag is re-pushed (else nodes keep the old
    image)."""
    clients_per_pod: Annotated[int, Field(ge=1)] = 10
    """Clients trained one after another in one pod: 1,000 clients need not mean 1,000 pods."""
    parallelism: Annotated[int, Field(ge=1)] = 10
    """At most this many client pods of a round run at once."""
    max_spec_kb: Annotated[int, Field(ge=50)] = 400
    """The largest pipeline spec `compile` and `submit` write: KFP expands a spec into one
    Argo Workflow object several times its size, which etcd refuses above ~1.5 MB (KFP issue
    #13738: 56 tasks, 1.95 MiB). Each round adds ~25 KB."""
    rounds_per_run: Annotated[int, Field(ge=1)] | None = None
    """Rounds of one KFP run: a longer experiment runs as a chain of runs (segments), each
    continuing the same store run and MLflow run from its last published round (`fedprune
    submit --continue RUN_ID`). Default: as many as fit in `max_spec_kb`, measured when the
    pipeline is compiled."""
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
        "s3-access-key": "FEDPRUNE_S3_ACCESS_KEY",
        "s3-secret-key": "FEDPRUNE_S3_SECRET_KEY",
        "mlflow-username": "MLFLOW_TRACKING_USERNAME",
        "mlflow-password": "MLFLOW_TRACKING_PASSWORD",
    }
    """Secret key → environment variable, for every component."""
    data_pvc: str | None = None
    """PersistentVolumeClaim holding the data sets (`fedprune data fetch` output), mounted
    read-only-by-convention at `data_path` in every pod; the image does not carry data."""
    data_path: str = "/data"
    sites: dict[str, SiteConfig] = {}
    """Sites as places (data kept at sites, `partition: natural`): site → where its pods run
    and what they may read. Each site's pods read only its own folder and send the server
    statistics, never rows; the server's pods read only the server's test set. Empty: every
    pod reads the whole data set (one data volume, a simulation)."""
    site_secret_env: dict[str, str] = {
        "s3-access-key": "FEDPRUNE_S3_ACCESS_KEY",
        "s3-secret-key": "FEDPRUNE_S3_SECRET_KEY",
    }
    """Secret key → environment variable in a site's pods: S3 keys only (they log nothing
    to MLflow)."""


def check_sites(cfg) -> None:
    """Raise ValueError, naming the field, for settings that would read a site's data outside
    that site's pods."""
    sites = cfg.kubeflow.sites
    if not sites:
        return
    data = cfg.data
    if data.partition.kind != "natural":
        raise ValueError(
            "kubeflow.sites keeps data at sites: data.partition must be natural (one client "
            f"per site), not {data.partition.kind}"
        )
    if data.num_clients != len(sites):
        raise ValueError(
            f"kubeflow.sites names {len(sites)} sites: data.num_clients must be {len(sites)}, "
            f"not {data.num_clients}"
        )
    name = data.dataset
    files = sorted(n for n in DATASETS.names() if isinstance(DATASETS.get(n), FileSource))
    if name not in files:
        raise ValueError(
            f"kubeflow.sites reads each site's own files: data.dataset must be one of "
            f"{', '.join(files)}, not {name}"
        )
    if data.train_subset is not None:
        raise ValueError(
            "data.train_subset counts rows of the sites' union, which no pod holds: unset it "
            "with kubeflow.sites"
        )
    volumes = {name: bool(site.data_pvc or cfg.kubeflow.data_pvc) for name, site in sites.items()}
    if len(set(volumes.values())) > 1:
        without = ", ".join(sorted(n for n, has in volumes.items() if not has))
        raise ValueError(
            f"kubeflow.sites: {without} has no data_pvc while other sites do: give every site "
            "a volume (its own data_pvc, or kubeflow.data_pvc) or none (S3 paths)"
        )
    method = METHODS.get(cfg.pruning.method)
    if method.needs(cfg.pruning).beyond_a_site:
        raise ValueError(
            f"pruning method '{cfg.pruning.method}' reads clients' data or state outside "
            "their sites (an initial prune on the server, every client's masks): it cannot "
            "run with kubeflow.sites"
        )


def site_items(cfg) -> list[dict]:
    """The sites as the pipeline's ParallelFor items, in client order: each site's name,
    node selector, tolerations (Kubernetes JSON), Secret and volume, defaults filled in."""
    kf = cfg.kubeflow
    return [
        {
            "site": name,
            "node_selector": site.node_selector,
            "tolerations": [t.model_dump(exclude_none=True) for t in site.tolerations],
            "secret": site.credentials_secret or kf.credentials_secret,
            "volume": site.data_pvc or kf.data_pvc or "",
        }
        for name, site in sorted(kf.sites.items())
    ]


def dag_shape(cfg) -> dict[str, object]:
    """The settings a compiled pipeline has fixed (rounds are unrolled, client groups fanned
    out, pod settings written in): a run whose `config_json` changes any of them cannot run
    as compiled, so its first task refuses it (`check_dag_shape`)."""
    shape: dict[str, object] = {
        "rounds": cfg.rounds,
        "clients per round": cfg.most_clients_per_round(),
    }
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
