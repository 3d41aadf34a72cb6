import torch

from fedprune.records import GlobalModel
from fedprune.registry import Params
from fedprune.strategies.buffers import DecodedUpdate
from fedprune.strategies.fedavg import FedAvg
from fedprune.strategies.mask_aware import MaskAware


def update(values, keep, bias, n):
    return DecodedUpdate(
        weights={"w": torch.tensor(values), "b": torch.tensor(bias)},
        mask={"w": torch.tensor(keep)},
        num_samples=n,
    )


UPDATES = [
    update([1.0, 2.0, 0.0, 0.0], [True, True, False, False], [1.0], 10),
    update([3.0, 0.0, 6.0, 0.0], [True, False, True, False], [4.0], 30),
]
START = GlobalModel({"w": torch.zeros(4), "b": torch.zeros(1)}, {"w": torch.ones(4, dtype=bool)})


def test_mask_aware_matches_hand_computed_average():
    model = MaskAware(Params()).aggregate(UPDATES, START)
    # coord 0: both kept -> (10*1 + 30*3) / 40 = 2.5; coord 1: only client A -> 2.0;
    # coord 2: only client B -> 6.0; coord 3: nobody -> 0 and pruned.
    assert torch.equal(model.weights["w"], torch.tensor([2.5, 2.0, 6.0, 0.0]))
    assert torch.equal(model.mask["w"], torch.tensor([True, True, True, False]))
    assert torch.equal(model.weights["b"], torch.tensor([(10 * 1.0 + 30 * 4.0) / 40]))


def test_fedavg_shrinks_partly_pruned_coordinates():
    model = FedAvg(Params()).aggregate(UPDATES, START)
    assert torch.allclose(model.weights["w"], torch.tensor([2.5, 0.5, 4.5, 0.0]))
    assert torch.equal(model.mask["w"], torch.tensor([True, True, True, False]))


def test_identical_masks_make_both_rules_agree():
    g = torch.Generator().manual_seed(0)
    keep = torch.rand(50, generator=g) > 0.5
    updates = [
        DecodedUpdate({"w": torch.randn(50, generator=g) * keep}, {"w": keep}, n)
        for n in (5, 7, 11)
    ]
    start = GlobalModel({"w": torch.zeros(50)}, {"w": keep})
    a = FedAvg(Params()).aggregate(updates, start).weights
    b = MaskAware(Params()).aggregate(updates, start).weights
    assert torch.allclose(a["w"], b["w"], atol=1e-6)
