"""Typed experiment configuration: one YAML file describes one experiment.

Every model forbids unknown keys, so a typo fails before any work instead of being silently
ignored; pydantic's messages name the field and the allowed values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedprune.errors import UserError

Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
Sparsity = Annotated[float, Field(ge=0.0, lt=1.0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PartitionConfig(Strict):
    """How the training set is split across clients (all seeded)."""

    kind: Literal["iid", "dirichlet", "shards", "quantity_skew"] = "iid"
    alpha: Annotated[float, Field(gt=0.0)] = 0.5
    """Dirichlet concentration: label skew for `dirichlet`, size skew for `quantity_skew`."""
    shards_per_client: Annotated[int, Field(ge=1)] = 2
    """For `shards`: each client gets this many label-sorted shards (≈ that many classes)."""
    min_samples: Annotated[int, Field(ge=1)] = 10
    """Every client gets at least this many samples."""


class DataConfig(Strict):
    dataset: Literal["mnist", "fashion-mnist"] = "mnist"
    num_clients: Annotated[int, Field(ge=1)] = 10
    partition: PartitionConfig = PartitionConfig()
    train_subset: Annotated[int, Field(ge=1)] | None = None
    """Use only the first N training samples (tests, quick looks)."""
    test_subset: Annotated[int, Field(ge=1)] | None = None


class ModelConfig(Strict):
    name: Literal["mlp", "lenet5", "cnn"] = "mlp"
    hidden: Annotated[int, Field(ge=1)] = 200
    """Width of the MLP's two hidden layers (the FedAvg paper's 2NN uses 200)."""


class ClientConfig(Strict):
    """Local training on each client: SGD with an optional FedProx proximal term."""

    epochs: Annotated[int, Field(ge=1)] = 1
    batch_size: Annotated[int, Field(ge=1)] = 32
    lr: Annotated[float, Field(gt=0.0)] = 0.05
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    prox_mu: Annotated[float, Field(ge=0.0)] = 0.0
    """FedProx μ (Li et al. 2020): 0 is plain FedAvg local training."""
    vectorize: bool = False
    """Train a round's clients together (torch.func.vmap); same results within float noise."""


class SamplingConfig(Strict):
    """Clients per round: a fraction of all clients, or an exact count (not both)."""

    fraction: Fraction | None = None
    count: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> SamplingConfig:
        if self.fraction is not None and self.count is not None:
            raise ValueError("set either sampling.fraction or sampling.count, not both")
        return self


class ScheduleConfig(Strict):
    """Target sparsity per round. `gradual` is Zhu & Gupta's (2017) cubic ramp; `iterative`
    removes `rate` of the remaining weights every `every` rounds until `target` (Frankle &
    Carbin 2019, the lottery ticket schedule)."""

    kind: Literal["none", "oneshot", "gradual", "iterative"] = "none"
    target: Sparsity = 0.0
    at_round: Annotated[int, Field(ge=1)] = 1
    """For `oneshot`: the round after which the model is pruned to `target`."""
    start_round: Annotated[int, Field(ge=1)] = 1
    end_round: Annotated[int, Field(ge=1)] = 10
    """For `gradual`: sparsity ramps from 0 after `start_round` to `target` at `end_round`."""
    every: Annotated[int, Field(ge=1)] = 5
    rate: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    """For `iterative`: after rounds every, 2·every, … remove `rate` of the remaining weights."""

    @model_validator(mode="after")
    def _ordered(self) -> ScheduleConfig:
        if self.kind == "gradual" and self.end_round < self.start_round:
            raise ValueError("pruning.schedule.end_round must be >= start_round")
        if self.kind != "none" and self.target == 0.0:
            raise ValueError(f"pruning.schedule.target must be > 0 for kind '{self.kind}'")
        return self


class FedDSTConfig(Strict):
    """FedDST (Bibikar et al. 2022): clients prune and regrow every `every` rounds."""

    every: Annotated[int, Field(ge=1)] = 5
    """Mask readjustment rounds: every, 2·every, …"""
    fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    """Share of each layer's kept weights a client drops and regrows (cosine-decayed over
    the rounds, as in RigL)."""


class PruneFLConfig(Strict):
    """PruneFL (Jiang et al. 2022): initial prune on one client, then importance-driven
    mask adjustment every `every` rounds."""

    every: Annotated[int, Field(ge=1)] = 5
    initial_client: Annotated[int, Field(ge=0)] = 0
    """The client whose data trains the model before the initial prune."""
    initial_epochs: Annotated[int, Field(ge=1)] = 5


class LotteryConfig(Strict):
    """LotteryFL's personal masks (Li et al. 2020, arXiv 2008.03371)."""

    personal: bool = False
    """Each client keeps its own mask: when the received global model, under that mask, is
    accurate enough on the client's validation rows, the client prunes `schedule.rate` of its
    remaining weights by magnitude (never beyond the schedule's target for the round) and
    rewinds the kept ones to their initial values before training. The server averages each
    weight over the clients that kept it; the global model itself is not pruned."""
    accuracy_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    """Validation accuracy the received model must reach before a client prunes further."""
    validation_share: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    """Share of each client's rows held out (seeded) to decide when it prunes."""


class PruningConfig(Strict):
    """Which pruning method, how sparse when, and where. See docs/methods.md."""

    method: Literal["magnitude", "structured", "feddst", "prunefl", "lottery"] = "magnitude"
    """`magnitude`: unstructured, keeps the largest |w| (dense FedAvg with schedule `none`);
    `structured`: whole channels/neurons by L2 norm, physically removed for training;
    `feddst`: dynamic sparse training; `prunefl`: adaptive masks from squared gradients;
    `lottery`: magnitude pruning with rewind of the kept weights to their initial values."""
    schedule: ScheduleConfig = ScheduleConfig()
    scope: Literal["global", "layerwise"] = "global"
    placement: Literal["server", "client"] = "server"
    """`server`: prune the aggregated model, clients train under its mask.
    `client`: each client prunes its local model before upload (mask-aware aggregation;
    method `magnitude` only)."""
    include_bias_and_norm: bool = False
    feddst: FedDSTConfig = FedDSTConfig()
    prunefl: PruneFLConfig = PruneFLConfig()
    lottery: LotteryConfig = LotteryConfig()

    @model_validator(mode="after")
    def _placement(self) -> PruningConfig:
        if self.placement == "client" and self.method != "magnitude":
            raise ValueError(
                f"pruning.placement 'client' is for method 'magnitude' only; "
                f"method '{self.method}' decides its masks itself (use placement 'server')"
            )
        if self.lottery.personal and self.method != "lottery":
            raise ValueError(
                f"pruning.lottery.personal is for method 'lottery' only, not '{self.method}'"
            )
        return self


class CompressionConfig(Strict):
    encoding: Literal["dense", "sparse"] = "sparse"
    values: Literal["fp32", "fp16", "int8"] = "fp32"
    """Value precision on the wire; int8 has one scale per tensor, error ≤ max|w|/127."""
    stochastic_rounding: bool = False
    """int8 only: round up or down at random (seeded), unbiased in expectation."""
    values_only_downloads: bool = True
    """A client that holds the broadcast's mask (same content hash) downloads values only."""


class AggregationConfig(Strict):
    method: Literal["fedavg", "mask_aware"] = "mask_aware"


class EvalConfig(Strict):
    batch_size: Annotated[int, Field(ge=1)] = 200
    every: Annotated[int, Field(ge=1)] = 1
    """Test the global model every N rounds (and always after the last round)."""


class EngineConfig(Strict):
    """The local engine (`fedprune run`); the Kubeflow engine parallelises by pods instead."""

    workers: Annotated[int, Field(ge=1)] = 1
    """Processes that train a round's clients in parallel (each with cores / workers threads)."""


class ResourcesConfig(Strict):
    """Kubernetes requests and limits of one pod (quantities as Kubernetes writes them)."""

    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "2Gi"
    memory_limit: str = "4Gi"


class TolerationConfig(Strict):
    key: str
    operator: Literal["Equal", "Exists"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"


class AggregatorConfig(Strict):
    """Where the aggregation pods run: a GPU node (the default) or any CPU node."""

    device: Literal["gpu", "cpu"] = "gpu"
    accelerator_type: str = "nvidia.com/gpu"
    accelerator_limit: Annotated[int, Field(ge=1)] = 1
    node_selector: dict[str, str] = {"nvidia.com/gpu.present": "true"}
    tolerations: list[TolerationConfig] = [TolerationConfig(key="nvidia.com/gpu")]
    resources: ResourcesConfig = ResourcesConfig(memory_request="4Gi", memory_limit="16Gi")
    timeout_s: Annotated[int, Field(ge=1)] = 3600


class KubeflowConfig(Strict):
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


class S3Config(Strict):
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


class ExperimentConfig(Strict):
    experiment: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")] = "default"
    seed: int = 0
    rounds: Annotated[int, Field(ge=1)] = 10
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    client: ClientConfig = ClientConfig()
    sampling: SamplingConfig = SamplingConfig()
    pruning: PruningConfig = PruningConfig()
    compression: CompressionConfig = CompressionConfig()
    aggregation: AggregationConfig = AggregationConfig()
    eval: EvalConfig = EvalConfig()
    engine: EngineConfig = EngineConfig()
    store: str = "fedprune-runs"
    """Artifact store: a local folder, or `s3://BUCKET/PREFIX` (see `s3`). Each run keeps its
    artifacts under `<store>/<experiment>/<run id>/`."""
    s3: S3Config = S3Config()
    tracking: str = "sqlite:///fedprune-runs/mlflow.db"
    init_from: Literal["scratch", "latest"] = "scratch"
    """`latest`: start from the newest global model any run of this experiment published to
    the store (warm start for scheduled runs); `scratch`: fresh seeded weights."""
    kubeflow: KubeflowConfig = KubeflowConfig()

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if self.sampling.count is not None and self.sampling.count > self.data.num_clients:
            raise ValueError(
                f"sampling.count ({self.sampling.count}) exceeds data.num_clients "
                f"({self.data.num_clients})"
            )
        if self.pruning.placement == "client" and self.aggregation.method != "mask_aware":
            raise ValueError(
                "pruning.placement 'client' needs aggregation.method 'mask_aware' "
                "(plain averaging would shrink every weight a client pruned)"
            )
        personal = self.pruning.lottery.personal
        if self.client.vectorize and (
            self.pruning.method not in ("magnitude", "lottery") or personal
        ):
            raise ValueError(
                f"client.vectorize supports pruning.method 'magnitude' and 'lottery', not "
                f"'{self.pruning.method}'"
                + (" with lottery.personal" if personal else "")
                + " (its clients change their masks or model shapes)"
            )
        needs_union = self.pruning.method in ("feddst", "prunefl") or personal
        if needs_union and self.aggregation.method != "mask_aware":
            what = (
                "pruning.lottery.personal"
                if personal
                else f"pruning.method '{self.pruning.method}'"
            )
            raise ValueError(f"{what} needs aggregation.method 'mask_aware'")
        if self.pruning.prunefl.initial_client >= self.data.num_clients:
            raise ValueError(
                f"pruning.prunefl.initial_client ({self.pruning.prunefl.initial_client}) must "
                f"be < data.num_clients ({self.data.num_clients})"
            )
        if self.store.startswith("s3://") and self.s3.endpoint is None:
            raise ValueError("s3.endpoint is required when store is s3://… (e.g. minio:9000)")
        return self

    def clients_per_round(self) -> int:
        if self.sampling.count is not None:
            return self.sampling.count
        fraction = self.sampling.fraction if self.sampling.fraction is not None else 1.0
        return max(1, round(fraction * self.data.num_clients))


class ConfigError(UserError):
    """A config file that cannot be used; the message lists every offending field."""


def format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (not a setting; check the spelling)"
        lines.append(f"  {field}: {message}")
    return "\n".join(lines)


def parse_config(raw: object, source: str = "config") -> ExperimentConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(raw).__name__}")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{source} is invalid:\n{format_errors(error)}") from None


def load_config(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return parse_config(raw, str(path))


def flatten(config: ExperimentConfig) -> dict[str, str]:
    """Dotted keys for MLflow params, e.g. `pruning.schedule.target`."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            out[prefix] = str(value)

    walk("", config.model_dump())
    return out
