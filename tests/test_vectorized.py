"""Vectorised client training gives the sequential loop's results, within float noise."""

import pytest
import torch

from fedprune import steps
from fedprune.config import parse_config
from fedprune.io.codec import decode
from fedprune.pruning.masks import apply_mask_, magnitude_mask


@pytest.mark.parametrize(
    "model,client",
    [
        ("mlp", {"epochs": 2, "batch_size": 32, "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}),
        ("lenet5", {"epochs": 1, "batch_size": 16, "lr": 0.05, "prox_mu": 0.1}),
    ],
)
def test_vectorized_matches_sequential(mnist_small, model, client):
    raw = {
        "data": {"num_clients": 6, "partition": {"kind": "quantity_skew", "alpha": 1.0}},
        "model": {"name": model},
        "client": client,
    }
    sequential_cfg = parse_config(raw)
    vectorized_cfg = parse_config({**raw, "client": {**client, "vectorize": True}})
    shards = [s[:150] for s in steps.partition_data(mnist_small, sequential_cfg)]  # unequal sizes
    sequential = steps.Runtime.build(sequential_cfg, data=mnist_small, shards=shards)
    vectorized = steps.Runtime.build(vectorized_cfg, data=mnist_small, shards=shards)
    start = steps.init_global(sequential)
    start.mask = magnitude_mask(start.weights, start.mask, 0.7, scope="global")
    apply_mask_(start.weights, start.mask)
    payload = steps.broadcast(start, sequential_cfg)
    clients = [0, 2, 3, 5]

    one_by_one = steps.train_clients(sequential, payload, clients, round_=1)
    together = steps.train_clients(vectorized, payload, clients, round_=1)

    assert [u.client for u in together] == clients
    assert [u.num_samples for u in together] == [u.num_samples for u in one_by_one]
    for a, b in zip(one_by_one, together, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
        wa, ma = decode(a.payload)
        wb, mb = decode(b.payload)
        for name in wa:
            assert torch.allclose(wa[name], wb[name], atol=2e-5), name
        for name in ma:
            assert torch.equal(ma[name], mb[name])  # pruned weights stayed pruned
            assert (wb[name][~mb[name]] == 0).all()
