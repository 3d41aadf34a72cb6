"""Shared by the benchmarks: the plain PyTorch client loop of the bare floor and Flower."""

from __future__ import annotations


def train_plain(model, x, y, cfg, seed: int) -> None:
    """One client's local training as a plain PyTorch loop (the bare floor and Flower's
    clients): SGD at cfg.client.lr, batches in the order of a generator seeded with `seed`."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.client.lr)
    model.train()
    for _ in range(cfg.client.epochs):
        for batch in torch.randperm(len(y), generator=generator).split(cfg.client.batch_size):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
