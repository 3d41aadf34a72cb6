"""Data kept at sites, as a Kubeflow run places it (`kubeflow.sites`): before round 1 each
site's pod reads only its own folder and sends the server a `SiteSummary` (row count, the
shape it sees, the features' moments; no row); the server combines them with its own test
set into the `Federation`, which every later pod builds its runtime from instead of loading
the whole data set. See docs/kubeflow.md, "Sites as places"."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from fedprune.config import ExperimentConfig
from fedprune.steps.features import Moments, Standardization, client_moments, combine
from fedprune.steps.remote_data import localize
from fedprune.tasks.datasets import DataError, DataShape, FederatedData
from fedprune.tasks.datasets import load_data as load_dataset
from fedprune.tasks.datasets.files import View


@dataclass(frozen=True)
class SiteSummary:
    """What one site tells the server before round 1: no row leaves it."""

    site: str
    rows: int
    shape: DataShape
    """The input shape and output count its own rows show (a site may lack some classes)."""
    moments: Moments | None
    """The features' sums, when the data set standardises."""

    def to_json(self) -> str:
        moments = self.moments
        return json.dumps(
            {
                "site": self.site,
                "rows": self.rows,
                "input_shape": list(self.shape.input_shape),
                "outputs": self.shape.num_classes,
                "moments": None
                if moments is None
                else {
                    "count": moments.count,
                    "total": moments.total.tolist(),
                    "squares": moments.squares.tolist(),
                },
            }
        )

    @classmethod
    def from_json(cls, raw: str) -> SiteSummary:
        held = json.loads(raw)
        sums = held["moments"]
        moments = None
        if sums is not None:
            total, squares = (
                torch.tensor(sums[k], dtype=torch.float64) for k in ("total", "squares")
            )
            moments = Moments(sums["count"], total, squares)
        shape = DataShape(tuple(held["input_shape"]), held["outputs"])
        return cls(held["site"], held["rows"], shape, moments)


@dataclass(frozen=True)
class Federation:
    """What the server knows of a data set kept at sites: the sites in client order, their
    row counts, the shape the model is built for and the features' federated statistics."""

    sites: tuple[str, ...]
    rows: tuple[int, ...]
    shape: DataShape
    standardization: Standardization | None

    def to_json(self) -> str:
        stats = self.standardization
        return json.dumps(
            {
                "sites": list(self.sites),
                "rows": list(self.rows),
                "input_shape": list(self.shape.input_shape),
                "outputs": self.shape.num_classes,
                "standardization": None if stats is None else json.loads(stats.to_json()),
            }
        )

    @classmethod
    def from_json(cls, raw: str) -> Federation:
        held = json.loads(raw)
        stats = held["standardization"]
        return cls(
            tuple(held["sites"]),
            tuple(held["rows"]),
            DataShape(tuple(held["input_shape"]), held["outputs"]),
            None if stats is None else Standardization.from_json(json.dumps(stats)),
        )


def view_of(cfg: ExperimentConfig, site: str | None) -> View:
    """What a pod at `site` (None: the server) may read."""
    if site is None:
        return View(server=True)
    return View(site=site, path=cfg.kubeflow.sites[site].path)


def load_view(cfg: ExperimentConfig, view: View) -> FederatedData:
    """The part of the data set one place holds (from a local copy when it is in S3)."""
    params, view = localize(cfg.data, cfg.s3, view)
    return load_dataset(params, cfg.task.kind, view)


def summarize(cfg: ExperimentConfig, site: str) -> SiteSummary:
    data = load_view(cfg, view_of(cfg, site))
    moments = client_moments(data.x_train) if data.standardize else None
    return SiteSummary(site, len(data.x_train), data.shape, moments)


def federate(cfg: ExperimentConfig, summaries: list[SiteSummary]) -> Federation:
    """The server's side: the sites' summaries and its own test set give the model's shape
    and the standardisation; a site whose features differ is an error naming it."""
    test = load_view(cfg, view_of(cfg, None))
    by_site = {s.site: s for s in summaries}
    sites = tuple(sorted(cfg.kubeflow.sites))
    missing = [site for site in sites if site not in by_site]
    if missing:
        raise DataError(f"kubeflow.sites: no summary arrived from {', '.join(missing)}")
    for site in sites:
        if by_site[site].shape.input_shape != test.input_shape:
            raise DataError(
                f"kubeflow.sites.{site}: its data has input shape "
                f"{by_site[site].shape.input_shape}, the server's test set {test.input_shape}"
            )
    outputs = max(test.num_classes, *(by_site[s].shape.num_classes for s in sites))
    stats = combine([by_site[s].moments for s in sites]) if test.standardize else None  # type: ignore[misc]
    return Federation(
        sites, tuple(by_site[s].rows for s in sites), DataShape(test.input_shape, outputs), stats
    )
