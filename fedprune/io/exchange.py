"""Files that carry one step's output to the next step's pod (Kubeflow artifacts).

Formats are plain and safe to load: JSON for indices, metadata and the sites' statistics, safetensors and the
payload bytes of `fedprune.compression` for models. Nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from fedprune.config import ExperimentConfig
from fedprune.io.store import model_and_state, model_bytes, rounds_before_of
from fedprune.records import ClientUpdate, Downloads, GlobalModel, RoundPlan
from fedprune.steps.runtime import Runtime
from fedprune.steps.screening import Rejection
from fedprune.steps.sites import Federation
from fedprune.tasks.partitioners import Partition


def write_partition(path: str | Path, shards: Partition) -> None:
    Path(path).write_text(json.dumps([s.tolist() for s in shards]))


def write_federation(path: str | Path, federation: Federation) -> None:
    Path(path).write_text(federation.to_json())


def pod_runtime(
    cfg: ExperimentConfig, split: str | Path, *, site: str | None = None, with_data: bool = True
) -> Runtime:
    """A pod's runtime from the run's split artifact: the clients' rows (one data volume for
    every pod) or, with data kept at sites, the federation (a pod at `site` reads that
    site's folder; the server's pods only the server's test set)."""
    text = Path(split).read_text()
    held = json.loads(text)
    if isinstance(held, dict):
        federation = Federation.from_json(text)
        return Runtime.build(cfg, federation=federation, site=site, with_data=with_data)
    shards = [np.asarray(s, dtype=np.int64) for s in held]
    return Runtime.build(cfg, shards=shards, with_data=with_data)


def write_model(path: str | Path, model: GlobalModel, *, rounds_before: int = 0) -> None:
    """A global model between pods, with the rounds earlier runs trained it for."""
    data = model_bytes(model.weights, model.mask, model.state, rounds_before=rounds_before)
    Path(path).write_bytes(data)


def read_model(path: str | Path) -> GlobalModel:
    return GlobalModel(*model_and_state(Path(path).read_bytes()))


def read_rounds_before(path: str | Path) -> int:
    """`write_model`'s `rounds_before`, from the file's header only (not the tensors)."""
    with open(path, "rb") as file:
        length = file.read(8)
        return rounds_before_of(length + file.read(int.from_bytes(length, "little")))


def write_broadcast(folder: str | Path, broadcast: RoundPlan) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sent = broadcast.sent
    (folder / "payload.safetensors").write_bytes(sent.full)
    if sent.values is not None:
        (folder / "values.safetensors").write_bytes(sent.values)
    for client, download in sent.personal.items():
        (folder / f"personal-{client:06d}.safetensors").write_bytes(download)
    meta = {
        "round": broadcast.round,
        "rounds_before": broadcast.rounds_before,
        "clients": broadcast.clients,
        "started": broadcast.started,
        "full_clients": sent.full_clients,
        "values_clients": sent.values_clients,
        "mask_id": sent.mask_id,
        "personal": sorted(sent.personal),
    }
    (folder / "round.json").write_text(json.dumps(meta))


def read_broadcast(folder: str | Path) -> RoundPlan:
    folder = Path(folder)
    meta = json.loads((folder / "round.json").read_text())
    values = folder / "values.safetensors"
    sent = Downloads(
        full=(folder / "payload.safetensors").read_bytes(),
        values=values.read_bytes() if values.exists() else None,
        full_clients=meta["full_clients"],
        values_clients=meta["values_clients"],
        mask_id=meta["mask_id"],
        personal={
            c: (folder / f"personal-{c:06d}.safetensors").read_bytes() for c in meta["personal"]
        },
    )
    return RoundPlan(meta["round"], meta["clients"], sent, meta["started"], meta["rounds_before"])


def write_updates(folder: str | Path, updates: list[ClientUpdate]) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for update in updates:
        (folder / f"client-{update.client:06d}.safetensors").write_bytes(update.payload)
        if update.importance:
            (folder / f"client-{update.client:06d}.importance").write_bytes(update.importance)
    meta = [
        {"client": u.client, "num_samples": u.num_samples, "train_loss": u.train_loss}
        | ({} if math.isnan(u.personal_accuracy) else {"personal_accuracy": u.personal_accuracy})
        for u in updates
    ]
    (folder / "updates.json").write_text(json.dumps(meta))


def read_updates(folders: list[str | Path]) -> list[ClientUpdate]:
    """All client updates of a round, from every group's folder, in client order."""
    updates = []
    for folder in map(Path, folders):
        for meta in json.loads((folder / "updates.json").read_text()):
            stem = folder / f"client-{meta['client']:06d}"
            payload = stem.with_suffix(".safetensors").read_bytes()
            extra = stem.with_suffix(".importance")
            importance = extra.read_bytes() if extra.exists() else b""
            updates.append(ClientUpdate(payload=payload, importance=importance, **meta))
    return sorted(updates, key=lambda u: u.client)


def write_rejections(path: str | Path, rejected: list[Rejection]) -> None:
    """The aggregate pod's screening verdicts, for the evaluate pod that publishes the round."""
    Path(path).write_text(json.dumps([dataclasses.asdict(r) for r in rejected]))


def read_rejections(path: str | Path) -> list[Rejection]:
    return [Rejection(**r) for r in json.loads(Path(path).read_text())]
