"""The Kubeflow pipeline of one experiment, built from its config.

KFP v2 cannot loop over state, so the rounds are unrolled at compile time: each round is a
sub-pipeline (broadcast → ParallelFor over client groups → Collected updates → aggregate →
evaluate) whose output model feeds the next round. Aggregation asks for a GPU node; client
groups get CPU/memory requests, retries and a timeout; credentials come from a Kubernetes
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
from fedprune.config import ExperimentConfig
from fedprune.config.kubeflow import ResourcesConfig, dag_shape, site_items


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


def build_pipeline(cfg: ExperimentConfig) -> BaseComponent:
    kf = cfg.kubeflow
    step = {f.__name__: build(f, kf.image) for f in (setup, partition, init_model, broadcast)}
    step |= {f.__name__: build(f, kf.image) for f in (train_group, aggregate, evaluate, finalise)}
    step |= {f.__name__: build(f, kf.image) for f in (survey_site, federate)}
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
    compiler.Compiler().compile(build_pipeline(cfg), str(path))
    return Path(path)


def run_locally(cfg: ExperimentConfig, pipeline_root: str | Path) -> Path:
    """Run the pipeline with `kfp.local` in this Python environment; returns the final model.

    Kubernetes-only settings (resources, GPU, secrets) do not apply locally."""
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    result = build_pipeline(cfg)()
    return Path(result.output.path)
