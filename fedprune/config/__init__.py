"""Typed experiment configuration: one YAML file describes one experiment.

Every section forbids unknown keys, so a typo fails before any work instead of being silently
ignored; pydantic's messages name the field and the allowed values. The sections of the
extension points (data set, partition, model, pruning method and schedule, strategy) are the
unions of what their registries hold (`fedprune.registry`): the allowed names are the
registered ones, and each name brings its own settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import AfterValidator, Field, ValidationError, model_validator

from fedprune.config.kubeflow import KubeflowConfig, check_sites
from fedprune.errors import UserError
from fedprune.io.codec import CompressionConfig
from fedprune.io.s3 import S3Config
from fedprune.io.store import folder_name_problem
from fedprune.privacy.config import PrivacyConfig, check_privacy
from fedprune.pruning.methods import METHODS
from fedprune.pruning.schedules import SCHEDULES, schedule_for
from fedprune.registry import IMPORTED, ImportPath, Params, is_import_path
from fedprune.strategies import STRATEGIES
from fedprune.tasks.datasets import DATASETS
from fedprune.tasks.models import MODELS
from fedprune.tasks.objectives import TASKS
from fedprune.tasks.partitioners import PARTITIONERS
from fedprune.training.local import ClientConfig
from fedprune.uris import Uri

Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
REGISTERED_DEFAULTS = {
    registry.default: registry.tag
    for registry in (METHODS, STRATEGIES, MODELS, PARTITIONERS, SCHEDULES, TASKS, DATASETS)
}
"""Default entry → its tag key, to name the entry in messages when a config leaves it out."""


class SamplingConfig(Params):
    """Clients per round: a fraction of all clients, or an exact count (not both)."""

    fraction: Fraction | None = None
    count: Annotated[int, Field(ge=1)] | None = None
    poisson: bool = False
    """Each client joins each round independently with probability `fraction` (what the DP
    accountant assumes), so the number a round varies; a round may have none."""

    @model_validator(mode="after")
    def _one_of(self) -> SamplingConfig:
        if self.fraction is not None and self.count is not None:
            raise ValueError("set either sampling.fraction or sampling.count, not both")
        if self.poisson and self.fraction is None:
            raise ValueError("sampling.poisson needs sampling.fraction (each client's chance)")
        return self


class EvalConfig(Params):
    batch_size: Annotated[int, Field(ge=1)] = 200
    every: Annotated[int, Field(ge=1)] = 1
    """Test the global model every N rounds (and always after the last round)."""


class EngineConfig(Params):
    """The local engine (`fedprune run`); the Kubeflow engine parallelises by pods instead."""

    workers: Annotated[int, Field(ge=1)] = 1
    """Processes that train a round's clients in parallel (each with cores / workers threads)."""


class ExportConfig(Params):
    """Where the final model goes besides the store."""

    mlflow_model: bool = True
    """Log it as the run's MLflow model (pytorch flavour, signature, input example)."""
    onnx: bool = False
    """Also export it as ONNX (`model.onnx` in the store and the MLflow run; dynamic batch
    size; needs the `onnx` extra: pip install 'fedprune[onnx]')."""


class RegistryConfig(Params):
    """The MLflow Model Registry: with `name`, each run's final model becomes a new version of
    that registered model, tagged with its sparsity and main metric."""

    name: Annotated[str, Field(min_length=1)] | None = None


def _folder_name(value: str) -> str:
    if problem := folder_name_problem(value):
        raise ValueError(problem)
    return value


def _init_from(value: str) -> str:
    if value not in ("scratch", "latest") and not value.endswith(".safetensors"):
        raise ValueError(
            f"'{value}' is not scratch, latest, or the path or s3:// URI of a .safetensors file"
        )
    return value


class ExperimentConfig(Params):
    experiment: Annotated[str, AfterValidator(_folder_name)] = "default"
    """A folder name in the store: letters, digits, `.`, `_`, `-`, starting with a letter or
    digit (so never `.` or `..`), at most 100 characters."""
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    """Every RNG's seed (numpy and torch both take 0 … 2³² − 1)."""
    rounds: Annotated[int, Field(ge=1)] = 10
    task: TASKS.section() = TASKS.defaults()  # type: ignore[valid-type]
    """What is learned: `classification` (cross-entropy; accuracy, macro-F1, ROC AUC for two
    classes) or `regression` (MSE; RMSE, MAE)."""
    data: DATASETS.section() = DATASETS.defaults()  # type: ignore[valid-type]
    """The data set (`dataset`), its own settings, and the clients it is split over."""
    model: MODELS.section() = MODELS.defaults()  # type: ignore[valid-type]
    client: ClientConfig = ClientConfig()
    sampling: SamplingConfig = SamplingConfig()
    pruning: METHODS.section() = METHODS.defaults()  # type: ignore[valid-type]
    """Which pruning method (`method`), how sparse when (`schedule`), and the method's own
    settings beside them. See docs/methods.md."""
    compression: CompressionConfig = CompressionConfig()
    aggregation: STRATEGIES.section() = STRATEGIES.defaults()  # type: ignore[valid-type]
    """The server strategy (`method`) and its settings."""
    eval: EvalConfig = EvalConfig()
    engine: EngineConfig = EngineConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    """Differential privacy (central or local) with its accountant, and secure aggregation
    (docs/privacy.md)."""
    callbacks: list[ImportPath] = []
    """`package.module:callable`s called after every round's evaluation with the round's
    context; each returns extra metrics (docs/design.md, callbacks)."""
    store: Uri = "fedprune-runs"
    """Artifact store: a local folder, or `s3://BUCKET/PREFIX` (see `s3`). Each run keeps its
    artifacts under `<store>/<experiment>/<run id>/`."""
    s3: S3Config = S3Config()
    tracking: Uri = "sqlite:///fedprune-runs/mlflow.db"
    init_from: Annotated[Uri, AfterValidator(_init_from)] = "scratch"
    """`scratch`: fresh seeded weights; `latest`: the newest global model a finished run of
    this experiment published to the store (warm start for scheduled runs); or a pretrained state
    dict, the path or s3:// URI of a .safetensors file (the source document's step 1)."""
    export: ExportConfig = ExportConfig()
    registry: RegistryConfig = RegistryConfig()
    kubeflow: KubeflowConfig = KubeflowConfig()

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if self.sampling.count is not None and self.sampling.count > self.data.num_clients:
            raise ValueError(
                f"sampling.count ({self.sampling.count}) exceeds data.num_clients "
                f"({self.data.num_clients})"
            )
        method = METHODS.get(self.pruning.method)
        needs = method.needs(self.pruning)
        strategy = STRATEGIES.get(self.aggregation.method)
        if needs.mask_aware and not strategy.mask_aware:
            mask_aware = [n for n in STRATEGIES.names() if STRATEGIES.get(n).mask_aware]
            raise ValueError(
                f"pruning method '{self.pruning.method}' with these settings has clients "
                f"upload under masks of their own: aggregation.method must be mask-aware "
                f"({', '.join(mask_aware)}), not '{self.aggregation.method}' (plain averaging "
                "would shrink every weight a client pruned)"
            )
        if self.client.vectorize and not needs.vectorizable:
            raise ValueError(
                f"client.vectorize: pruning method '{self.pruning.method}' with these settings "
                "changes its clients' masks or model shapes (vectorised clients all train "
                "the global mask in the full-shape model)"
            )
        method.check(self.pruning, self.data.num_clients)
        strategy.check(self.aggregation, self.clients_per_round())
        if needs.classification and self.task.kind != "classification":
            raise ValueError(
                f"pruning method '{self.pruning.method}' with these settings scores clients "
                f"by accuracy: task must be classification, not '{self.task.kind}'"
            )
        check_sites(self)
        check_privacy(self)
        if self.registry.name is not None and not self.export.mlflow_model:
            raise ValueError("registry.name registers the MLflow model: set export.mlflow_model")
        if self.store.startswith("s3://") and self.s3.endpoint is None:
            raise ValueError("s3.endpoint is required when store is s3://… (e.g. minio:9000)")
        check_reached(self.pruning.schedule, self.rounds)
        return self

    def clients_per_round(self) -> int:
        return max(1, round(self.expected_clients_per_round()))

    def expected_clients_per_round(self) -> float:
        """Clients a round on average: the count, or q·N (DP-FedAvg's fixed denominator)."""
        if self.sampling.count is not None:
            return self.sampling.count
        fraction = self.sampling.fraction if self.sampling.fraction is not None else 1.0
        return fraction * self.data.num_clients

    def most_clients_per_round(self) -> int:
        """The most clients a round may draw: `clients_per_round()`, or with Poisson sampling
        the draw's 1 − 1e-9 quantile, for which the pipeline's client pods are made."""
        if not self.sampling.poisson:
            return self.clients_per_round()
        from scipy.stats import binom  # only Poisson sampling needs it

        return max(1, int(binom.ppf(1 - 1e-9, self.data.num_clients, self.sampling.fraction)))


def check_reached(params: Params, rounds: int) -> None:
    """A schedule must reach its target by the last round: a ramp that ends after it, or a
    one-shot round past it, would validate as "to 90%" and leave the run less sparse."""
    target = getattr(params, "target", None)
    if target is None:
        return
    schedule = schedule_for(params)
    reached = schedule.target(rounds)
    if reached >= target - 1e-9:
        return
    needed = next((r for r in range(rounds + 1, rounds + 100_000) if schedule.target(r) >= target - 1e-9), None)  # fmt: skip
    when = f"it gets there after round {needed}" if needed else "it never gets there"
    raise ValueError(
        f"pruning.schedule ({params.kind}) reaches {100 * reached:.0f}% by round {rounds}, "  # type: ignore[attr-defined]
        f"the last, not its target {100 * target:.0f}% ({when}): end the schedule by round "
        f"{rounds} or raise rounds"
    )


class ConfigError(UserError):
    """A config file that cannot be used; the message lists every offending field."""


TAGS = ("method", "name", "kind", "dataset")
"""The keys that choose a registry entry (see `fedprune.registry`)."""


def _field(loc: tuple, raw: object) -> tuple[str, str]:
    """A dotted field as the user wrote it, and which entry it belongs to: pydantic puts the
    chosen entry's name into the location of a tagged union (`pruning.feddst.every`); it is
    left out of the path and named instead (`pruning.every`, "for method 'feddst'")."""
    parts, chosen = [], ""
    tagged = False  # right after a union's own entry name comes a key the user wrote
    for part in loc:
        if isinstance(raw, dict) and not tagged:
            tag = next((t for t in TAGS if raw.get(t, None) == part), None)
            if tag is None and part == IMPORTED:  # an entry named by its import path
                tag = next((t for t in TAGS if is_import_path(str(raw.get(t, "")))), None)
                part = raw[tag] if tag else part
            defaulted = tag is None and part not in raw and part in REGISTERED_DEFAULTS
            if defaulted:
                tag = REGISTERED_DEFAULTS[part]  # the tag was left to its default
            if tag is not None:
                default = f", the default: set `{tag}`" if defaulted else ""
                chosen, tagged = f" (for {tag} '{part}'{default})", True
                continue
        tagged = False
        parts.append(str(part))
        raw = raw.get(part) if isinstance(raw, dict) else None
    return ".".join(parts) or "(top level)", chosen


def format_errors(error: ValidationError, raw: object) -> str:
    lines = []
    for item in error.errors():
        field, chosen = _field(item["loc"], raw)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = f"unknown key{chosen} (not a setting; check the spelling)"
        elif item["type"] == "union_tag_invalid":
            tag = str(item["ctx"]["discriminator"]).strip("'").removesuffix("()")
            field = f"{field}.{tag}" if field != "(top level)" else tag
            expected = str(item["ctx"]["expected_tags"]).replace(
                f", '{IMPORTED}'", ", or an import path package.module:callable"
            )
            message = f"unknown {item['ctx']['tag']!r}; registered: {expected}"
        elif chosen:
            message += chosen
        lines.append(f"  {field}: {message}")
    return "\n".join(lines)


def parse_config(raw: object, source: str = "config") -> ExperimentConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(raw).__name__}")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{source} is invalid:\n{format_errors(error, raw)}") from None


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
