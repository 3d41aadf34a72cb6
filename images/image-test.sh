#!/usr/bin/env bash
# `make image-test`: build images/Dockerfile for real on a base made here and check the result.
# Not in CI (minutes, needs root for dockerd and debootstrap). Steps, each timed:
#   1. dockerd: Debian's docker.io (installed with apt-get if missing), started if not running;
#   2. base image: debootstrap of Debian bookworm with python3 + venv + pip, `docker import`ed
#      (no registry image can be pulled here);
#   3. wheelhouse: containers here reach PyPI only through a TLS-intercepting proxy whose CA the
#      image does not trust, so the wheels are built on the host (images/wheelhouse.sh) and the
#      image installs them with `pip install --no-index` (build arg WHEELHOUSE);
#   4. docker build of images/Dockerfile with BASE_IMAGE=<that base> and EXTRAS=kubeflow,server
#      (the MLflow server's build, a superset of the pods': one build checks both roles);
#   5. checks: non-root user, `fedprune --help` (also on a read-only root filesystem, as the
#      chart runs it), CPU torch + kfp + the server extras import, `mlflow server` answers /health
#      read-only with its SQLite store on a volume (the chart's MLflow command);
#   6. the tiny pipeline through kfp.local.DockerRunner in the image, when pipelines/ provides it.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${BASE_IMAGE_TAG:-fedprune-base:bookworm}"
IMAGE="${IMAGE_TAG:-localhost/fedprune:image-test}"  # registry-qualified, as kubeflow.image must be
PY=.venv/bin/python
t0=$SECONDS
step() { printf '\n== %s (t=%ss)\n' "$1" "$((SECONDS - t0))"; }
fail() { echo "image-test FAILED: $*" >&2; exit 1; }

step "1. docker engine"
if ! docker info >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io
    fi
    [ "$(id -u)" = 0 ] || fail "dockerd is not running and starting it needs root"
    nohup dockerd >/tmp/fedprune-dockerd.log 2>&1 &
    echo "started dockerd pid $! (log /tmp/fedprune-dockerd.log)"
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || fail "dockerd did not come up; see /tmp/fedprune-dockerd.log"
fi
command -v debootstrap >/dev/null || {
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
}

step "2. base image $BASE"
s=$SECONDS; images/build-base.sh "$BASE"; echo "base: $((SECONDS - s)) s"

step "3. wheelhouse"
s=$SECONDS; images/wheelhouse.sh "$PY"; echo "wheelhouse: $((SECONDS - s)) s"

step "4. docker build images/Dockerfile -> $IMAGE"
s=$SECONDS
DOCKER_BUILDKIT=0 docker build -f images/Dockerfile -t "$IMAGE" --build-arg EXTRAS=kubeflow,server \
    --build-arg BASE_IMAGE="$BASE" --build-arg WHEELHOUSE=images/wheelhouse .
echo "build: $((SECONDS - s)) s"
docker image ls "$IMAGE"

step "5. checks"
user="$(docker image inspect -f '{{.Config.User}}' "$IMAGE")"
uid="$(docker run --rm --entrypoint id "$IMAGE" -u)"
echo "image user '$user', container uid $uid"
[ -n "$user" ] && [ "$uid" != 0 ] || fail "container runs as root"
docker run --rm "$IMAGE" --help | tee /tmp/fedprune-image-help.txt
grep -q "run" /tmp/fedprune-image-help.txt || fail "fedprune --help does not list its commands"
docker run --rm --read-only --tmpfs /tmp "$IMAGE" --help >/dev/null || fail "--help on a read-only root fs"
docker run --rm --read-only --tmpfs /tmp --entrypoint python "$IMAGE" -c '
import boto3, fedprune, kfp, kfp.kubernetes, minio, mlflow, psycopg2, torch
assert torch.version.cuda is None, torch.__version__
print("torch", torch.__version__, "kfp", kfp.__version__, "mlflow", mlflow.__version__)
'
name="fedprune-image-test-mlflow-$$"
docker run -d --rm --name "$name" --read-only --tmpfs /tmp --tmpfs /mlflow:uid=10001 \
    -e MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false -e HOME=/tmp \
    --entrypoint mlflow "$IMAGE" server --host 127.0.0.1 --port 5000 --workers 1 \
    --backend-store-uri sqlite:////mlflow/mlflow.db --artifacts-destination /mlflow/artifacts >/dev/null
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
ok=""
for _ in $(seq 90); do
    if docker exec "$name" python -c 'import urllib.request as u; print(u.urlopen("http://127.0.0.1:5000/health").read().decode())' 2>/dev/null; then ok=1; break; fi
    sleep 1
done
[ -n "$ok" ] || { docker logs "$name" | tail -20; fail "mlflow server in the image did not answer /health"; }
docker rm -f "$name" >/dev/null

step "6. tiny pipeline with kfp.local.DockerRunner"
if [ -f images/run_pipeline_in_image.py ] && [ -d pipelines ]; then
    "$PY" images/run_pipeline_in_image.py "$IMAGE"
else
    echo "SKIPPED: pipelines/ has no tiny pipeline yet; nothing real to run in the image"
fi

step "done"
size="$(docker image inspect -f '{{.Size}}' "$IMAGE")"
echo "image $IMAGE: $((size / 1000000)) MB; base $BASE: $(( $(docker image inspect -f '{{.Size}}' "$BASE") / 1000000 )) MB; total $((SECONDS - t0)) s"
