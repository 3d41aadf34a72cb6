"""Tables that ship inside scikit-learn (no download), written as a CSV data set's folder by
`fedprune data fetch NAME` and read through `dataset: csv` like a user's own files: breast
cancer as the hospitals' classification task, diabetes as a regression one."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TEST_SHARE = 0.2
SPLIT_SEED = 0
"""The test rows are a fixed seeded 20% of the table: every fetch writes the same files."""


@dataclass(frozen=True)
class BundledTable:
    """A scikit-learn `load_*` table: `label` names its target column in the CSV files."""

    name: str
    loader: str
    label: str
    how: str

    def is_fetched(self, folder: Path) -> bool:
        return all((folder / f"{split}.csv").is_file() for split in ("train", "test"))

    def fetch(self, folder: Path) -> None:
        """train.csv and test.csv into `folder`, each written beside and then moved in."""
        import sklearn.datasets

        frame = getattr(sklearn.datasets, self.loader)(as_frame=True).frame
        frame = frame.rename(columns={"target": self.label})
        frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
        order = np.random.default_rng(SPLIT_SEED).permutation(len(frame))
        test_rows = round(TEST_SHARE * len(frame))
        folder.mkdir(parents=True, exist_ok=True)
        for split, rows in (("test", order[:test_rows]), ("train", order[test_rows:])):
            staged = folder / f".{split}.csv.tmp"
            frame.iloc[np.sort(rows)].to_csv(staged, index=False)
            os.replace(staged, folder / f"{split}.csv")


TABLES = {
    table.name: table
    for table in (
        BundledTable(
            "breast_cancer",
            "load_breast_cancer",
            "diagnosis",
            "scikit-learn's Wisconsin diagnostic table: 569 tumours, 30 features, "
            "0 = malignant, 1 = benign",
        ),
        BundledTable(
            "diabetes",
            "load_diabetes",
            "progression",
            "scikit-learn's diabetes table: 442 patients, 10 standardised features, "
            "disease progression after one year",
        ),
    )
}
