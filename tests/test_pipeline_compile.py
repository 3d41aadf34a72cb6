"""The pipeline compiled by the real kfp compiler, read back and inspected."""

import json

import pytest
import torch
import yaml
from kfp import components

from fedprune.config import ConfigError, parse_config
from pipelines.federated_pruning import compile_pipeline, group_count

SECRET_VALUES = ("minio-root-password", "s3cr3t-value", "AKIAEXAMPLE")
IMAGE = "registry.example.com/fedprune:0.1.0"


def compiled(tmp_path, **overrides):
    raw = {"rounds": 3, "data": {"num_clients": 20}, "sampling": {"count": 10}}
    raw["kubeflow"] = {"image": IMAGE, "clients_per_pod": 4, "parallelism": 3, **overrides}
    cfg = parse_config(raw)
    path = compile_pipeline(cfg, tmp_path / "pipeline.yaml")
    pipeline_spec, platform_spec = yaml.safe_load_all(path.read_text())
    return cfg, path, pipeline_spec, platform_spec["platforms"]["kubernetes"]


def executors_of(spec: dict, component: str) -> list[str]:
    return [
        name for name in spec["deploymentSpec"]["executors"] if name.startswith(f"exec-{component}")
    ]


def test_loads_back_with_kfp(tmp_path):
    cfg, path, spec, _ = compiled(tmp_path)
    loaded = components.load_component_from_file(str(path))
    assert loaded.name == "fedprune-default"
    assert spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]


def test_rounds_and_groups_are_unrolled(tmp_path):
    cfg, _, spec, _ = compiled(tmp_path)
    assert group_count(cfg) == 3  # 10 clients per round, 4 per pod
    rounds = [
        t
        for t in spec["root"]["dag"]["tasks"].values()
        if t["componentRef"]["name"].startswith("comp-fl-round")
    ]
    assert len(rounds) == cfg.rounds
    round_dag = spec["components"]["comp-fl-round"]["dag"]["tasks"]
    (loop,) = [t for name, t in round_dag.items() if name.startswith("for-loop")]
    assert loop["parameterIterator"]["items"]["raw"] == "[0, 1, 2]"
    assert loop["iteratorPolicy"]["parallelismLimit"] == 3
    # tasks a round expands to: broadcast + 3 groups + aggregate + evaluate
    assert {"broadcast", "aggregate", "evaluate"} <= set(round_dag)


def test_only_aggregate_asks_for_a_gpu_in_the_cuda_image(tmp_path):
    selector = {"nvidia.com/gpu.present": "true"}
    _, _, spec, platform = compiled(
        tmp_path, aggregator={"device": "gpu", "node_selector": selector}
    )
    executors = spec["deploymentSpec"]["executors"]
    for name, executor in executors.items():
        resources = executor["container"].get("resources", {})
        has_gpu = "accelerator" in resources
        assert has_gpu == name.startswith("exec-aggregate"), name
    k8s = platform["deploymentSpec"]["executors"]
    for name, settings in k8s.items():
        is_aggregate = name.startswith("exec-aggregate")
        assert ("nodeSelector" in settings) == is_aggregate, name
        assert ("tolerations" in settings) == is_aggregate, name
    assert len(executors_of(spec, "aggregate")) == 3  # one per unrolled round
    for name in executors_of(spec, "aggregate"):
        assert k8s[name]["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
        assert k8s[name]["tolerations"][0]["key"] == "nvidia.com/gpu"
        gpu = executors[name]["container"]["resources"]["accelerator"]
        assert gpu["resourceType"] == "nvidia.com/gpu" and int(gpu["resourceCount"]) == 1
        assert executors[name]["container"]["image"] == IMAGE + "-cuda"
    assert {e["container"]["image"] for n, e in executors.items() if "aggregate" not in n} == {
        IMAGE
    }


def test_gpu_aggregation_needs_no_node_selector_and_takes_its_own_image(tmp_path):
    own = "registry.example.com/fedprune-gpu@sha256:" + "a" * 64
    _, _, spec, platform = compiled(tmp_path, aggregator={"device": "gpu", "image": own})
    for name in executors_of(spec, "aggregate"):
        assert "nodeSelector" not in platform["deploymentSpec"]["executors"][name]
        assert spec["deploymentSpec"]["executors"][name]["container"]["image"] == own


@pytest.mark.skipif(torch.cuda.is_available(), reason="the test needs a machine without a GPU")
def test_a_gpu_aggregate_step_without_a_gpu_fails_instead_of_running_on_cpu(tmp_path):
    from types import SimpleNamespace

    from components.aggregate.component import aggregate

    cfg = parse_config({"kubeflow": {"image": IMAGE, "aggregator": {"device": "gpu"}}})
    nothing = SimpleNamespace(path=str(tmp_path / "never-read"))
    with pytest.raises(RuntimeError, match="device is gpu but this pod sees no GPU"):
        aggregate(cfg.model_dump_json(), nothing, [nothing], nothing, nothing, nothing, nothing)


@pytest.mark.parametrize(
    ("kubeflow", "said"),
    [
        ({}, "kubeflow.image: required to compile for a cluster"),
        ({"image": "registry.example.com/fedprune@sha256:" + "b" * 64,
          "aggregator": {"device": "gpu"}}, "kubeflow.aggregator.image: required with device gpu"),
    ],
)  # fmt: skip
def test_compile_needs_an_image_that_can_exist(tmp_path, kubeflow, said):
    cfg = parse_config({"rounds": 1, "kubeflow": kubeflow})
    with pytest.raises(ConfigError, match=said):
        compile_pipeline(cfg, tmp_path / "p.yaml")
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize("image", ["fedprune:0.1.0", "library/fedprune", "Registry.io/X:1"])
def test_an_image_name_without_a_registry_is_a_config_error(image):
    with pytest.raises(ConfigError, match="kubeflow.image.*not a registry-qualified image"):
        parse_config({"kubeflow": {"image": image}})


def test_every_pod_gets_the_pull_policy(tmp_path):
    _, _, _, platform = compiled(tmp_path, image_pull_policy="Always")
    settings = platform["deploymentSpec"]["executors"].values()
    assert {s["imagePullPolicy"] for s in settings} == {"Always"}


def test_aggregation_is_on_cpu_by_default(tmp_path):
    _, path, spec, platform = compiled(tmp_path)
    executors = spec["deploymentSpec"]["executors"].values()
    assert all("accelerator" not in e["container"].get("resources", {}) for e in executors)
    assert all("tolerations" not in s for s in platform["deploymentSpec"]["executors"].values())


def test_client_tasks_have_resources_retries_timeout_and_secret(tmp_path):
    cfg, _, spec, platform = compiled(
        tmp_path, client_resources={"cpu_limit": "3", "memory_limit": "6Gi"}
    )
    train = executors_of(spec, "train-group")[0]
    resources = spec["deploymentSpec"]["executors"][train]["container"]["resources"]
    assert resources["cpuLimit"] == 3 and resources["memoryLimit"] == 6.442450944
    round_dag = spec["components"]["comp-fl-round"]["dag"]["tasks"]
    loop_component = next(t for n, t in round_dag.items() if n.startswith("for-loop"))[
        "componentRef"
    ]["name"]
    train_task = spec["components"][loop_component]["dag"]["tasks"]["train-group"]
    assert train_task["retryPolicy"]["maxRetryCount"] == cfg.kubeflow.client_retries
    settings = platform["deploymentSpec"]["executors"][train]
    assert int(settings["activeDeadlineSeconds"]) == cfg.kubeflow.client_timeout_s
    (secret,) = settings["secretAsEnv"]
    assert secret["secretName"] == "fedprune-credentials"
    assert {m["envVar"] for m in secret["keyToEnv"]} >= {
        "FEDPRUNE_S3_ACCESS_KEY",
        "FEDPRUNE_S3_SECRET_KEY",
    }


def test_no_credential_values_in_yaml(tmp_path, monkeypatch):
    for value, name in zip(
        SECRET_VALUES,
        ("MINIO_ROOT_PASSWORD", "FEDPRUNE_S3_SECRET_KEY", "FEDPRUNE_S3_ACCESS_KEY"),
        strict=True,
    ):
        monkeypatch.setenv(name, value)
    _, path, _, _ = compiled(tmp_path)
    text = path.read_text()
    assert not any(value in text for value in SECRET_VALUES)


def test_hundred_clients_fifty_rounds_compiles(tmp_path):
    import time

    big = {"image": IMAGE, "clients_per_pod": 10, "max_spec_kb": 2000}
    cfg = parse_config({"rounds": 50, "data": {"num_clients": 100}, "kubeflow": big})
    started = time.perf_counter()
    path = compile_pipeline(cfg, tmp_path / "big.yaml")
    seconds = time.perf_counter() - started
    spec = next(yaml.safe_load_all(path.read_text()))
    rounds = [
        t
        for t in spec["root"]["dag"]["tasks"].values()
        if t["componentRef"]["name"].startswith("comp-fl-round")
    ]
    assert len(rounds) == 50 and group_count(cfg) == 10
    print(
        f"\n100 clients × 50 rounds: {50 * (10 + 3) + 4} tasks at run time, compiled in {seconds:.1f} s, "
        f"{path.stat().st_size / 1e3:.0f} kB"
    )


def test_core_never_imports_kfp():
    """No module of the core library (every one, imported) loads kfp or kubernetes."""
    import subprocess
    import sys

    code = (
        "import importlib, pkgutil, sys, fedprune\n"
        "for m in pkgutil.walk_packages(fedprune.__path__, 'fedprune.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('kfp', 'kubernetes'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_data_volume_is_mounted_when_configured(tmp_path):
    _, _, spec, platform = compiled(tmp_path, data_pvc="fedprune-data")
    for name, settings in platform["deploymentSpec"]["executors"].items():
        assert settings["pvcMount"][0]["mountPath"] == "/data", name
        env = spec["deploymentSpec"]["executors"][name]["container"]["env"]
        assert {"name": "FEDPRUNE_DATA", "value": "/data"} in env
    _, _, _, plain = compiled(tmp_path)
    assert all("pvcMount" not in s for s in plain["deploymentSpec"]["executors"].values())


def test_a_run_time_config_that_reshapes_the_dag_fails_in_its_first_task(tmp_path):
    """Rounds and client groups are fixed at compile time: the setup task compares the run's
    config_json with the compiled shape (a constant in the YAML) and names what differs."""
    import json

    import pytest

    from components.setup.component import setup
    from fedprune.config import ConfigError

    cfg, _, spec, _ = compiled(tmp_path)
    (setup_task,) = [t for n, t in spec["root"]["dag"]["tasks"].items() if n == "setup"]
    shape = setup_task["inputs"]["parameters"]["compiled_shape"]["runtimeValue"]["constant"]
    changed = cfg.model_copy(
        update={"rounds": 5, "sampling": cfg.sampling.model_copy(update={"count": 12})}
    )
    with pytest.raises(ConfigError) as error:
        setup(changed.model_dump_json(), shape)
    message = str(error.value)
    assert "rounds (3 compiled, 5 given)" in message and "clients per round" in message
    assert "kubeflow.image" not in message  # unchanged settings are not named
    assert json.loads(shape)["rounds"] == 3


def test_sites_pods_run_on_their_nodes_with_their_own_secret_and_volume(tmp_path):
    """With `kubeflow.sites` the surveys and client pods fan out over the sites, each taking
    its node selector, tolerations, Secret and volume from its ParallelFor item; the server's
    pods keep the server's Secret and volume, and none of them asks for a site's."""
    raw = {
        "rounds": 2,
        "data": {"dataset": "csv", "path": "/data/h", "label": "y", "num_clients": 2,
                 "partition": {"kind": "natural"}},
        "kubeflow": {
            "image": IMAGE,
            "data_pvc": "server-data",
            "sites": {
                "a": {"node_selector": {"site": "a"}, "tolerations": [{"key": "site-a"}],
                      "data_pvc": "a-data", "credentials_secret": "a-keys"},
                "b": {"node_selector": {"site": "b"}, "data_pvc": "b-data",
                      "credentials_secret": "b-keys"},
            },
        },
    }  # fmt: skip
    path = compile_pipeline(parse_config(raw), tmp_path / "sites.yaml")
    spec, platform = yaml.safe_load_all(path.read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    loops = [t for n, t in spec["root"]["dag"]["tasks"].items() if n.startswith("for-loop")]
    (items,) = [json.loads(t["parameterIterator"]["items"]["raw"]) for t in loops]
    assert [(i["site"], i["secret"], i["volume"], i["node_selector"]) for i in items] == [
        ("a", "a-keys", "a-data", {"site": "a"}),
        ("b", "b-keys", "b-data", {"site": "b"}),
    ]
    assert items[0]["tolerations"] == [
        {"key": "site-a", "operator": "Exists", "effect": "NoSchedule"}
    ]
    placed = [n for n in executors if n.startswith(("exec-survey-site", "exec-train-group"))]
    assert len(placed) == 1 + 2  # one survey, a client fan-out per round
    for name in placed:
        settings = executors[name]
        item = "loop-item-param-1-subvar-"
        assert (
            settings["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"]
            == item + "node_selector"
        )
        assert (
            settings["tolerations"][0]["tolerationJson"]["componentInputParameter"]
            == item + "tolerations"
        )
        (secret,) = settings["secretAsEnv"]
        assert secret["secretNameParameter"]["componentInputParameter"] == item + "secret"
        assert {m["envVar"] for m in secret["keyToEnv"]} == {
            "FEDPRUNE_S3_ACCESS_KEY",
            "FEDPRUNE_S3_SECRET_KEY",
        }
        assert (
            settings["pvcMount"][0]["pvcNameParameter"]["componentInputParameter"]
            == item + "volume"
        )
    for name in set(executors) - set(placed):
        settings = executors[name]
        assert settings["secretAsEnv"][0]["secretName"] == "fedprune-credentials", name
        assert [m["constant"] for m in settings["pvcMount"]] == ["server-data"], name
    assert "exec-partition" not in executors and "exec-federate" in executors
