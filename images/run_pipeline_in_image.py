"""Step 6 of `make image-test`: the tiny pipeline through kfp.local.DockerRunner, every component
in a container of the image under test (as its non-root user), compared with the local engine.

    .venv/bin/python images/run_pipeline_in_image.py IMAGE

The pipeline root, run store and MLflow SQLite file live in one temporary folder that DockerRunner
bind-mounts at the same path; the MNIST files are copied there too ($FEDPRUNE_DATA).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from docker.types import Mount
from kfp import local

from fedprune import steps
from fedprune.config import parse_config
from fedprune.engine import local as engine
from fedprune.io.exchange import read_model
from fedprune.pruning.masks import measure_sparsity
from fedprune.tasks.datasets import data_dir, load_dataset
from pipelines.federated_pruning import build_pipeline


def main(image: str) -> None:
    # The image's user (uid 10001) writes into folders that this (root) process and kfp.local
    # create on the host: make them world-writable. (On Kubernetes the pipeline root is MinIO.)
    os.umask(0)
    work = Path(tempfile.mkdtemp(prefix="fedprune-image-pipeline-"))
    os.chmod(work, 0o777)
    # The MNIST files, copied where the image's user can read them (the host cache may be private)
    data = Path(shutil.copytree(data_dir().resolve() / "mnist", work / "data" / "mnist")).parent
    settings = {
        "experiment": "image-test",
        "rounds": 2,
        "data": {"num_clients": 4, "train_subset": 6000, "test_subset": 2000},
        "pruning": {"schedule": {"kind": "oneshot", "target": 0.8, "at_round": 1}},
        "compression": {"encoding": "sparse"},
        "store": str(work / "runs"),
        "tracking": f"sqlite:///{work}/mlflow.db",
        "kubeflow": {"image": image, "clients_per_pod": 2, "aggregator": {"device": "cpu"}},
    }
    cfg = parse_config(settings)
    # The reference run keeps its own store and MLflow file: files this (root) process creates
    # are not writable by the image's user, which must create the pipeline's own.
    reference_cfg = parse_config(
        settings | {"store": str(work / "engine-runs"), "tracking": f"sqlite:///{work}/engine.db"}
    )
    (work / "pipeline-root").mkdir(mode=0o777)  # else docker creates the bind source as root
    mnist = load_dataset("mnist", train_subset=6000, test_subset=2000)

    started = time.perf_counter()
    reference = engine.run_experiment(reference_cfg, data=mnist)
    print(f"local engine: {time.perf_counter() - started:.1f} s")

    local.init(
        runner=local.DockerRunner(
            # KFP on Kubernetes sets the container command, which replaces the image's
            # `fedprune` entrypoint; docker-py's `command` only replaces CMD, so reset it here.
            entrypoint=["/usr/bin/env"],
            environment={"FEDPRUNE_DATA": str(data), "HOME": "/tmp"},
            mounts=[Mount(target=str(work), source=str(work), type="bind")],  # data, store, MLflow
        ),
        pipeline_root=str(work / "pipeline-root"),
    )
    started = time.perf_counter()
    result = build_pipeline(cfg)()
    print(f"kfp.local DockerRunner: {time.perf_counter() - started:.1f} s")

    final = read_model(Path(result.output.path))
    accuracy = steps.evaluate(steps.Runtime.build(cfg, data=mnist), final)
    report = measure_sparsity(final.weights, final.mask)
    expected = reference.history[-1]
    print(
        f"accuracy in image {accuracy.metrics['accuracy']:.4f}, local engine {expected.test['accuracy']:.4f}"
    )
    if (accuracy.metrics["accuracy"], accuracy.loss) != (
        expected.test["accuracy"],
        expected.test_loss,
    ):
        sys.exit("the pipeline in the image gave other numbers than the local engine")
    if abs(report.sparsity - 0.8) > 1e-3:
        sys.exit(f"sparsity {report.sparsity} != 0.8")
    print("pipeline in the image: same accuracy and loss as the local engine")


if __name__ == "__main__":
    main(sys.argv[1])
