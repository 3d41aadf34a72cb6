"""Write scikit-learn's bundled breast-cancer data (Wisconsin diagnostic, 569 tumours, 30
features; no download) as three hospitals' CSV files of unequal sizes, and a held-out test set
for the server:

    data/clients/hospital-a/train.csv   data/clients/hospital-b/train.csv
    data/clients/hospital-c/train.csv   data/test.csv

    python prepare.py [--out data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

SHARES = {"hospital-a": 0.55, "hospital-b": 0.30, "hospital-c": 0.15}
"""Each hospital's share of the training rows."""
TEST_SHARE = 0.2


def write(out: Path, seed: int = 0) -> Path:
    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "diagnosis"})
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    order = np.random.default_rng(seed).permutation(len(frame))
    test_rows = round(TEST_SHARE * len(frame))
    out.mkdir(parents=True, exist_ok=True)
    frame.iloc[order[:test_rows]].to_csv(out / "test.csv", index=False)
    train = order[test_rows:]
    cuts = np.cumsum([round(share * len(train)) for share in SHARES.values()])[:-1]
    for site, rows in zip(SHARES, np.split(train, cuts), strict=True):
        (out / "clients" / site).mkdir(parents=True, exist_ok=True)
        frame.iloc[rows].to_csv(out / "clients" / site / "train.csv", index=False)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    folder = write(parser.parse_args().out)
    print(f"wrote {folder}: {', '.join(SHARES)} and test.csv")
