"""Fashion-MNIST, 60k/10k, from the Debian package `dataset-fashion-mnist`."""

from __future__ import annotations

from pathlib import Path

from fedprune.tasks.datasets.base import DATASETS
from fedprune.tasks.datasets.idx import IdxSource, run_tool


def unpack(work: Path) -> Path:
    run_tool(["apt-get", "download", "dataset-fashion-mnist"], work)
    (deb,) = work.glob("dataset-fashion-mnist_*.deb")
    run_tool(["dpkg-deb", "-x", str(deb), "root"], work)
    return work / "root" / "usr" / "share" / "datasets" / "fashion-mnist"


FASHION_MNIST = DATASETS.register("fashion-mnist")(
    IdxSource(
        name="fashion-mnist",
        how="Debian package dataset-fashion-mnist",
        mean=0.2860,
        std=0.3530,
        sha256={
            "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        },
        unpack=unpack,
    )
)
