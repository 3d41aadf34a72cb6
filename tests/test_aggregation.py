import torch

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


def test_mask_aware_matches_hand_computed_average():
    weights, mask = MaskAware(Params()).aggregate(UPDATES)
    # coord 0: both kept -> (10*1 + 30*3) / 40 = 2.5; coord 1: only client A -> 2.0;
    # coord 2: only client B -> 6.0; coord 3: nobody -> 0 and pruned.
    assert torch.equal(weights["w"], torch.tensor([2.5, 2.0, 6.0, 0.0]))
    assert torch.equal(mask["w"], torch.tensor([True, True, True, False]))
    assert torch.equal(weights["b"], torch.tensor([(10 * 1.0 + 30 * 4.0) / 40]))


def test_fedavg_shrinks_partly_pruned_coordinates():
    weights, mask = FedAvg(Params()).aggregate(UPDATES)
    assert torch.allclose(weights["w"], torch.tensor([2.5, 0.5, 4.5, 0.0]))
    assert torch.equal(mask["w"], torch.tensor([True, True, True, False]))


def test_identical_masks_make_both_rules_agree():
    g = torch.Generator().manual_seed(0)
    keep = torch.rand(50, generator=g) > 0.5
    updates = [
        DecodedUpdate({"w": torch.randn(50, generator=g) * keep}, {"w": keep}, n)
        for n in (5, 7, 11)
    ]
    a, _ = FedAvg(Params()).aggregate(updates)
    b, _ = MaskAware(Params()).aggregate(updates)
    assert torch.allclose(a["w"], b["w"], atol=1e-6)
