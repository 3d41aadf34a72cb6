"""The Kubeflow pipeline of one experiment, built from its config.

KFP v2 cannot loop over state, so the rounds are unrolled at compile time: each round is a
sub-pipeline (broadcast → ParallelFor over client groups → Collected updates → aggregate →
evaluate) whose output model feeds the next round. Aggregation runs on CPU, or with
`kubeflow.aggregator.device: gpu` on a GPU node in the CUDA image; client groups get CPU/memory requests, retries and a timeout; credentials come from a Kubernetes
Secret by name, so no value is ever written into the compiled YAML.

With data kept at sites (`kubeflow.sites`) the fan-out is over the sites instead of client
groups: each site's pods (a survey before round 1, its client every round) run on its nodes
with its own volume and Secret, and the server's pods build from the federation the surveys
gave (`federate`), reading only the server's test set.
"""

import json
import math
import tempfile
from pathlib import Path

from kfp import compiler, dsl, kubernetes, local
from kfp.dsl import Dataset, Input, Model
from kfp.dsl.base_component import BaseComponent
from kfp.dsl.pipeline_channel import PipelineParameterChannel
from kfp.dsl.pipeline_task import PipelineTask

from components import build
from components.aggregate.component import aggregate
from components.broadcast.component import broadcast
from components.evaluate.component import evaluate
from components.federate.component import federate
from components.finalise.component import finalise
from components.init_model.component import init_model
from components.partition.component import partition
from components.setup.component import setup
from components.survey.component import survey_site
from components.train.component import train_group
from fedprune.config import ConfigError, ExperimentConfig
from fedprune.config.kubeflow import ResourcesConfig, cuda_image, dag_shape, site_items
from fedprune.privacy.config import pipeline_problem


def group_count(cfg: ExperimentConfig) -> int:
    return math.ceil(cfg.most_clients_per_round() / cfg.kubeflow.clients_per_pod)


def _pod(
    task: PipelineTask,
    cfg: ExperimentConfig,
    *,
    resources: ResourcesConfig,
    timeout_s: int,
    site: PipelineParameterChannel | None = None,
):
    """Settings every pod gets: resources, a deadline, credentials by reference, no caching
    (steps log to MLflow, so a cached step would silently skip its logging). A pod at a
    `site` (a ParallelFor item of `site_items`) runs on that site's nodes with only its
    Secret and its volume."""
    kf = cfg.kubeflow
    task.set_cpu_request(resources.cpu_request).set_cpu_limit(resources.cpu_limit)
    task.set_memory_request(resources.memory_request).set_memory_limit(resources.memory_limit)
    task.set_caching_options(False)
    kubernetes.set_image_pull_policy(task, kf.image_pull_policy)
    kubernetes.set_timeout(task, timeout_s)
    kubernetes.add_pod_label(task, "fedprune.io/pipeline", "true")  # NetworkPolicies admit these
    if site is None:
        kubernetes.use_secret_as_env(task, kf.credentials_secret, kf.secret_env)
        volume = kf.data_pvc
    else:
        kubernetes.use_secret_as_env(task, site.secret, kf.site_secret_env)
        kubernetes.add_node_selector_json(task, site.node_selector)
        kubernetes.add_toleration_json(task, site.tolerations)
        volume = site.volume if site_items(cfg)[0]["volume"] else None
    if volume:
        kubernetes.mount_pvc(task, volume, kf.data_path)
        task.set_env_variable("FEDPRUNE_DATA", kf.data_path)
    return task


def _on_gpu(task: PipelineTask, cfg: ExperimentConfig) -> None:
    gpu = cfg.kubeflow.aggregator
    task.set_accelerator_type(gpu.accelerator_type).set_accelerator_limit(gpu.accelerator_limit)
    for key, value in gpu.node_selector.items():
        kubernetes.add_node_selector(task, key, value)
    for toleration in gpu.tolerations:
        kubernetes.add_toleration(
            task, toleration.key, toleration.operator, toleration.value, toleration.effect
        )


LOCAL_IMAGE = "localhost/kfp-local-runs-in-this-environment:none"
"""`kfp.local`'s SubprocessRunner ignores images: the base image of a pipeline run here."""


def images(cfg: ExperimentConfig, *, local: bool) -> tuple[str, str]:
    """The project image and the aggregate step's (the CUDA build with `device: gpu`); for a
    cluster both must exist, so a missing `kubeflow.image` is an error here."""
    kf = cfg.kubeflow
    if local:
        return LOCAL_IMAGE, LOCAL_IMAGE
    if kf.image is None:
        raise ConfigError(
            "kubeflow.image: required to compile for a cluster: the project image as your "
            "nodes pull it, e.g. registry.example.com/fedprune:0.1.0 (make image, then push)"
        )
    if kf.aggregator.device == "cpu":
        return kf.image, kf.image
    try:
        return kf.image, cuda_image(kf)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def build_pipeline(
    cfg: ExperimentConfig, *, local: bool = False, segment: tuple[int, int] | None = None
) -> BaseComponent:
    """The experiment's pipeline, or with `segment` (first, last round) the part of a long
    experiment one KFP run holds: a later segment continues the run named by its
    `continue_run` parameter, and only the last one finalises. `local` for kfp.local (no
    images needed)."""
    if problem := pipeline_problem(cfg):
        raise ConfigError(problem)
    kf = cfg.kubeflow
    first, last = segment or (1, cfg.rounds)
    image, aggregate_image = images(cfg, local=local)
    step = {f.__name__: build(f, image) for f in (setup, partition, init_model, broadcast)}
    step |= {f.__name__: build(f, image) for f in (train_group, evaluate, finalise)}
    step |= {f.__name__: build(f, image) for f in (survey_site, federate)}
    step["aggregate"] = build(aggregate, aggregate_image)
    light = ResourcesConfig(
        cpu_request="500m", cpu_limit="1", memory_request="1Gi", memory_limit="2Gi"
    )
    groups = list(range(group_count(cfg)))
    sites = site_items(cfg)

    @dsl.pipeline(name="fl-round", description="One federated round.")
    def fl_round(
        config_json: str,
        run_id: str,
        round_: int,
        global_model: Input[Model],
        shards: Input[Dataset],
    ) -> Model:
        sent = step["broadcast"](
            config_json=config_json,
            run_id=run_id,
            global_model=global_model,
            shards=shards,
            round_=round_,
        )
        _pod(
            sent.set_display_name("broadcast"), cfg, resources=light, timeout_s=kf.client_timeout_s
        )
        with dsl.ParallelFor(items=sites or groups, parallelism=kf.parallelism) as item:
            trained = step["train_group"](
                config_json=config_json,
                run_id=run_id,
                message=sent.outputs["message"],
                shards=shards,
                group=0 if sites else item,
                site=item.site if sites else "",
            )
            _pod(
                trained,
                cfg,
                resources=kf.client_resources,
                timeout_s=kf.client_timeout_s,
                site=item if sites else None,
            )
            trained.set_retry(num_retries=kf.client_retries, backoff_duration="30s")
        combined = step["aggregate"](
            config_json=config_json,
            message=sent.outputs["message"],
            updates=dsl.Collected(trained.outputs["updates"]),
            global_model=global_model,
            shards=shards,
        )
        _pod(combined, cfg, resources=kf.aggregator.resources, timeout_s=kf.aggregator.timeout_s)
        if kf.aggregator.device == "gpu":
            _on_gpu(combined, cfg)
        scored = step["evaluate"](
            config_json=config_json,
            run_id=run_id,
            message=sent.outputs["message"],
            updates=dsl.Collected(trained.outputs["updates"]),  # one Collected per consumer
            model=combined.outputs["model"],
            screening=combined.outputs["screening"],
            shards=shards,
        )
        _pod(scored, cfg, resources=kf.client_resources, timeout_s=kf.client_timeout_s)
        return combined.outputs["model"]

    def _split(config_json: str) -> PipelineTask:
        """The clients' rows (partition), or with data kept at sites the federation: every
        site surveys its own folder, the server combines the surveys."""
        if not sites:
            shards = step["partition"](config_json=config_json)
            return _pod(shards, cfg, resources=light, timeout_s=kf.client_timeout_s)
        with dsl.ParallelFor(items=sites, parallelism=kf.parallelism) as site:
            surveyed = step["survey_site"](config_json=config_json, site=site.site)
            _pod(surveyed, cfg, resources=light, timeout_s=kf.client_timeout_s, site=site)
        combined = step["federate"](
            config_json=config_json, summaries=dsl.Collected(surveyed.outputs["summary"])
        )
        return _pod(combined, cfg, resources=light, timeout_s=kf.client_timeout_s)

    whole = (first, last) == (1, cfg.rounds)
    rounds = "" if whole else f", rounds {first}-{last}"

    @dsl.pipeline(
        name=f"fedprune-{cfg.experiment}" + ("" if whole else f"-rounds-{first}-{last}"),
        description=f"Federated pruning: {cfg.rounds} rounds{rounds}, "
        f"{cfg.data.num_clients} clients.",
    )
    def federated_pruning(
        config_json: str = cfg.model_dump_json(), continue_run: str = ""
    ) -> Model:
        compiled = json.dumps(dag_shape(cfg))  # a constant: the run-time config must match it
        setup_task = step["setup"](
            config_json=config_json, compiled_shape=compiled, first_round=first,
            continue_run=continue_run,
        )  # fmt: skip
        run = _pod(setup_task, cfg, resources=light, timeout_s=kf.client_timeout_s)
        shards = _split(config_json)
        model = step["init_model"](
            config_json=config_json, run_id=run.output, shards=shards.outputs["shards"],
            after_round=first - 1,
        )  # fmt: skip
        _pod(model, cfg, resources=light, timeout_s=kf.client_timeout_s)
        current = model.outputs["model"]
        for round_ in range(first, last + 1):
            task = fl_round(
                config_json=config_json,
                run_id=run.output,
                round_=round_,
                global_model=current,
                shards=shards.outputs["shards"],
            ).set_display_name(f"round {round_}")
            current = task.output
        if last < cfg.rounds:  # the next segment continues from the published round
            return current
        final = step["finalise"](
            config_json=config_json,
            run_id=run.output,
            model=current,
            shards=shards.outputs["shards"],
        )
        _pod(final, cfg, resources=light, timeout_s=kf.client_timeout_s)
        return final.outputs["final_model"]

    return federated_pruning


def spec_size(cfg: ExperimentConfig, rounds: int) -> int:
    """Bytes of the compiled spec of the experiment cut to `rounds` rounds, finalise step
    included (an upper bound for a segment of as many rounds)."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "pipeline.yaml"
        short = cfg.model_copy(update={"rounds": rounds})
        compiler.Compiler().compile(build_pipeline(short), str(path))
        return path.stat().st_size


def rounds_per_run(cfg: ExperimentConfig) -> int:
    """`kubeflow.rounds_per_run`, or as many rounds as fit in `kubeflow.max_spec_kb`,
    measured from the specs of one and two rounds (each round adds the same)."""
    kf = cfg.kubeflow
    if kf.rounds_per_run is not None:
        return min(kf.rounds_per_run, cfg.rounds)
    budget, one = kf.max_spec_kb * 1000, spec_size(cfg, 1)
    if one > budget:
        raise ConfigError(
            f"kubeflow.max_spec_kb: one round compiles to {one / 1000:.0f} KB of pipeline spec, "
            f"above {kf.max_spec_kb} KB"
        )
    if cfg.rounds == 1:
        return 1
    per_round = spec_size(cfg, 2) - one
    return min(cfg.rounds, 1 + int((budget - one) / per_round))


def segment_after(cfg: ExperimentConfig, done: int, per_run: int) -> tuple[int, int]:
    """The rounds of the KFP run that follows `done` published rounds."""
    if done >= cfg.rounds:
        raise ConfigError(f"all {cfg.rounds} rounds are published: nothing to continue")
    return done + 1, min(done + per_run, cfg.rounds)


def compile_pipeline(
    cfg: ExperimentConfig,
    path: str | Path,
    *,
    done: int = 0,
    segment: tuple[int, int] | None = None,
) -> Path:
    """Compile the KFP run that follows `done` published rounds: the whole experiment when
    it fits in `kubeflow.max_spec_kb`, else its next segment (`rounds_per_run` rounds), or
    the `segment` given (one of `segments`). A spec above the budget (an explicit
    `rounds_per_run` too large) is removed and refused with the rounds that fit."""
    path = Path(path)
    budget = cfg.kubeflow.max_spec_kb * 1000
    if segment is None and done == 0 and cfg.kubeflow.rounds_per_run is None:
        compiler.Compiler().compile(build_pipeline(cfg), str(path))  # fits whole, usually
        if path.stat().st_size <= budget:
            return path
    segment = segment or segment_after(cfg, done, rounds_per_run(cfg))
    compiler.Compiler().compile(build_pipeline(cfg, segment=segment), str(path))
    size = path.stat().st_size
    if size > budget:
        path.unlink()
        fit = rounds_per_run(cfg.model_copy(update={"kubeflow": cfg.kubeflow.model_copy(
            update={"rounds_per_run": None})}))  # fmt: skip
        raise ConfigError(
            f"kubeflow.rounds_per_run: {segment[1] - segment[0] + 1} rounds compile to "
            f"{size / 1000:.0f} KB of pipeline spec, above kubeflow.max_spec_kb "
            f"({cfg.kubeflow.max_spec_kb} KB; the Argo Workflow would outgrow etcd): at most "
            f"{fit}, or leave it unset"
        )
    return path


def segments(cfg: ExperimentConfig) -> list[tuple[int, int]]:
    """Every KFP run of the experiment, as (first, last) rounds."""
    per_run, done, found = rounds_per_run(cfg), 0, []
    while done < cfg.rounds:
        found.append(segment_after(cfg, done, per_run))
        done = found[-1][1]
    return found


def run_locally(cfg: ExperimentConfig, pipeline_root: str | Path) -> Path:
    """Run the whole pipeline with `kfp.local` in this Python environment; returns the
    final model.

    Kubernetes-only settings (resources, GPU, secrets) do not apply locally."""
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    result = build_pipeline(cfg, local=True)()
    return Path(result.output.path)
