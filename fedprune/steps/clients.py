"""A round's client side: each sampled client starts from what it downloaded, trains under
its mask and encodes its model for upload."""

from __future__ import annotations

import math

import torch
from safetensors.torch import save as save_tensors

from fedprune.io.codec import decode, encode
from fedprune.privacy.central import clipped_model, secret_generator
from fedprune.pruning.channels import expand_weights, slice_weights
from fedprune.pruning.masks import Weights, apply_mask_
from fedprune.records import ClientUpdate, seed_for
from fedprune.steps.downloads import Personal
from fedprune.steps.personal import accuracy_on, personal_accuracy, validation_split
from fedprune.steps.runtime import Runtime
from fedprune.training.local import local_train
from fedprune.training.vectorized import train_together


def train_clients(
    rt: Runtime,
    payload: bytes,
    clients: list[int],
    *,
    round_: int,
    personal: dict[int, Personal] | None = None,
) -> list[ClientUpdate]:
    """Each client starts from the decoded broadcast and trains under its mask: one after
    another in the one shared model (or in the physically smaller model, for structured
    pruning), or all together with `client.vectorize`. The method may change a client's
    mask before training (LotteryFL's personal masks: `personal` holds the masks clients
    kept from earlier rounds and what they downloaded), during it (FedDST) or after it
    (client-side pruning) and may ask for importance (PruneFL); then the client encodes its
    model for upload."""
    cfg, method, data, model = rt.cfg, rt.method, rt.data, rt.model
    assert data is not None, "training needs the data"
    weights, mask = decode(payload)
    personal = personal or {}
    generators = [
        torch.Generator().manual_seed(seed_for(cfg.seed, round_, client)) for client in clients
    ]
    shard_rows = [rt.rows(client) for client in clients]
    train_rows, held_out = list(shard_rows), [torch.empty(0, dtype=torch.int64)] * len(clients)
    if method.personal:  # LotteryFL's clients hold out validation rows and train on the rest
        share = cfg.pruning.validation_share
        splits = [
            validation_split(r, client=c, share=share, seed=cfg.seed)
            for r, c in zip(shard_rows, clients, strict=True)
        ]
        train_rows, held_out = [t for t, _ in splits], [v for _, v in splits]
    scores = [math.nan] * len(clients) if not method.personal else []
    batch = cfg.eval.batch_size
    if cfg.client.vectorize:
        trained, losses = train_together(
            model,
            weights,
            mask,
            x=data.x_train,
            y=data.y_train,
            shards=shard_rows,
            generators=generators,
            cfg=cfg.client,
            task=rt.task,
        )
        masks = [mask] * len(clients)
        importances: list[Weights | None] = [None] * len(clients)
    else:
        trained, losses, masks, importances = [], [], [], []
        learner = method.learner(weights, mask) if method.trains_shrunk else model
        start = slice_weights(weights, mask) if learner is not model else weights
        learn_mask = {} if learner is not model else mask
        for index, (client, generator) in enumerate(zip(clients, generators, strict=True)):
            rows = train_rows[index]
            if method.personal:
                own = personal.get(client, Personal(mask))
                start, learn_mask = method.client_start(
                    own.received(weights), own.mask, round_=round_,
                    accuracy=
                    lambda w, v=held_out[index]: accuracy_on(model, w, data=data, rows=v, batch_size=batch),
                )  # fmt: skip
            learner.load_state_dict(start)
            x, y = data.x_train[rows], data.y_train[rows]
            steps = cfg.client.epochs * math.ceil(len(rows) / cfg.client.batch_size)
            importance = (
                {name: torch.zeros_like(weights[name]) for name in mask}
                if method.wants_importance(round_)
                else None
            )
            if cfg.privacy.mechanism == "local":  # DP-SGD; batches and noise nobody can redraw
                from fedprune.training.private import private_train  # imports Opacus

                loss = private_train(
                    learner, learn_mask, x=x, y=y, cfg=cfg.client, generator=secret_generator(),
                    task=rt.task, noise_multiplier=cfg.privacy.noise_multiplier,
                    clip=cfg.privacy.clip,
                ).loss  # fmt: skip
                kept = learn_mask  # DP-SGD never changes a mask
            else:
                loss, kept = local_train(
                    learner, learn_mask, x=x, y=y, cfg=cfg.client, generator=generator,
                    task=rt.task, regrowth=method.regrowth(round_, steps), importance=importance,
                )  # fmt: skip
            local = {name: t.detach().clone() for name, t in learner.state_dict().items()}
            if learner is not model:
                local, kept = expand_weights(local, mask, weights), mask
            if method.personal:
                scores.append(
                    personal_accuracy(model, rows=shard_rows[index], data=data, batch_size=batch)
                )
            losses.append(loss)
            trained.append(local)
            masks.append(kept)
            importances.append(importance)
    updates = []
    for client, rows, local, kept, importance, loss, score in zip(
        clients, train_rows, trained, masks, importances, losses, scores, strict=True
    ):
        kept = method.client_mask(local, kept, round_)
        apply_mask_(local, kept)
        if cfg.privacy.mechanism == "central" and cfg.privacy.clip_quantile is None:
            # DP-FedAvg's client bounds its own change (an adapted clip only the server knows)
            local = clipped_model(local, weights, kept, cfg.privacy.clip)
        upload = encode(local, kept, cfg.compression, seed=seed_for(cfg.seed, round_, client))
        extra = save_tensors({n: t.half() for n, t in importance.items()}) if importance else b""
        updates.append(ClientUpdate(client, len(rows), upload, loss, extra, score))
    return updates
