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


def group_count(cfg: ExperimentConfig) -> int:
    return math.ceil(cfg.clients_per_round() / cfg.kubeflow.clients_per_pod)


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


def build_pipeline(cfg: ExperimentConfig, *, local: bool = False) -> BaseComponent:
    """The experiment's pipeline; `local` for kfp.local (no images needed)."""
    kf = cfg.kubeflow
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

    @dsl.pipeline(
        name=f"fedprune-{cfg.experiment}",
        description=f"Federated pruning: {cfg.rounds} rounds, {cfg.data.num_clients} clients.",
    )
    def federated_pruning(config_json: str = cfg.model_dump_json()) -> Model:
        compiled = json.dumps(dag_shape(cfg))  # a constant: the run-time config must match it
        setup_task = step["setup"](config_json=config_json, compiled_shape=compiled)
        run = _pod(setup_task, cfg, resources=light, timeout_s=kf.client_timeout_s)
        shards = _split(config_json)
        model = step["init_model"](
            config_json=config_json, run_id=run.output, shards=shards.outputs["shards"]
        )
        _pod(model, cfg, resources=light, timeout_s=kf.client_timeout_s)
        current = model.outputs["model"]
        for round_ in range(1, cfg.rounds + 1):
            task = fl_round(
                config_json=config_json,
                run_id=run.output,
                round_=round_,
                global_model=current,
                shards=shards.outputs["shards"],
            ).set_display_name(f"round {round_}")
            current = task.output
        final = step["finalise"](
            config_json=config_json,
            run_id=run.output,
            model=current,
            shards=shards.outputs["shards"],
        )
        _pod(final, cfg, resources=light, timeout_s=kf.client_timeout_s)
        return final.outputs["final_model"]

    return federated_pruning


def compile_pipeline(cfg: ExperimentConfig, path: str | Path) -> Path:
    """Compile for a cluster; a spec above `kubeflow.max_spec_kb` is removed and refused with
    the rounds that fit."""
    path = Path(path)
    compiler.Compiler().compile(build_pipeline(cfg), str(path))
    size, budget = path.stat().st_size, cfg.kubeflow.max_spec_kb * 1000
    if size <= budget:
        return path
    path.unlink()
    message = (
        f"rounds: {cfg.rounds} rounds compile to {size / 1000:.0f} KB of pipeline spec, above "
        f"kubeflow.max_spec_kb ({cfg.kubeflow.max_spec_kb} KB; the Argo Workflow would outgrow "
        "etcd)"
    )
    if cfg.rounds > 1:  # what one round adds, from a one-round compile beside it
        one = path.with_suffix(".one-round.yaml")
        compiler.Compiler().compile(build_pipeline(cfg.model_copy(update={"rounds": 1})), str(one))
        first = one.stat().st_size
        one.unlink()
        fit = 1 + int((budget - first) / ((size - first) / (cfg.rounds - 1)))
        if fit >= 1:
            message += f": lower rounds to {fit} and chain runs with init_from: latest"
    raise ConfigError(message)


def run_locally(cfg: ExperimentConfig, pipeline_root: str | Path) -> Path:
    """Run the pipeline with `kfp.local` in this Python environment; returns the final model.

    Kubernetes-only settings (resources, GPU, secrets) do not apply locally."""
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    result = build_pipeline(cfg, local=True)()
    return Path(result.output.path)
