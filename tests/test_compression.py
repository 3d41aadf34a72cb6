import pytest
import torch

from fedprune.compression import decode, encode
from fedprune.config import CompressionConfig
from fedprune.pruning import apply_mask_, full_mask, magnitude_mask

HEADER_SLACK = 600  # safetensors' JSON header (names, shapes, offsets, our layout metadata)


def sparse_model(sparsity: float):
    g = torch.Generator().manual_seed(0)
    weights = {
        "fc.weight": torch.randn(200, 784, generator=g),
        "fc.bias": torch.randn(200, generator=g),
    }
    mask = magnitude_mask(weights, full_mask(weights, ["fc.weight"]), sparsity, "global")
    apply_mask_(weights, mask)
    return weights, mask


@pytest.mark.parametrize("encoding", ["dense", "sparse"])
def test_fp32_round_trip_is_exact(encoding):
    weights, mask = sparse_model(0.9)
    decoded, decoded_mask = decode(encode(weights, mask, CompressionConfig(encoding=encoding)))
    for name in weights:
        assert torch.equal(decoded[name], weights[name])
        assert decoded[name].dtype == torch.float32
    assert torch.equal(decoded_mask["fc.weight"], mask["fc.weight"])
    assert "fc.bias" not in decoded_mask


def test_fp16_round_trip_is_close_and_keeps_mask():
    weights, mask = sparse_model(0.5)
    decoded, decoded_mask = decode(encode(weights, mask, CompressionConfig(values="fp16")))
    assert torch.allclose(decoded["fc.weight"], weights["fc.weight"], rtol=1e-3, atol=1e-3)
    assert torch.equal(decoded_mask["fc.weight"], mask["fc.weight"])


def test_byte_counts_follow_the_payload_layout():
    numel = 200 * 784
    dense_weights, full = sparse_model(0.0)
    dense = encode(dense_weights, full, CompressionConfig(encoding="dense"))
    assert 4 * (numel + 200) <= len(dense) <= 4 * (numel + 200) + HEADER_SLACK

    weights, mask = sparse_model(0.9)
    kept = int(mask["fc.weight"].sum())
    for values, size in (("fp32", 4), ("fp16", 2)):
        payload = encode(weights, mask, CompressionConfig(encoding="sparse", values=values))
        body = kept * (4 + size) + 200 * size  # int32 indices + values, dense bias
        assert body <= len(payload) <= body + HEADER_SLACK
    assert len(encode(weights, mask, CompressionConfig())) < 0.25 * len(dense)


def test_sparse_falls_back_to_dense_when_that_is_smaller():
    weights, mask = sparse_model(0.1)
    sparse = encode(weights, mask, CompressionConfig(encoding="sparse"))
    dense = encode(weights, mask, CompressionConfig(encoding="dense"))
    assert abs(len(sparse) - len(dense)) < HEADER_SLACK


def test_small_tensors_use_narrow_indices():
    weights = {"w": torch.tensor([[0.0, 1.0], [0.0, 0.0]])}
    mask = {"w": weights["w"] != 0}
    decoded, decoded_mask = decode(encode(weights, mask, CompressionConfig()))
    assert torch.equal(decoded["w"], weights["w"]) and torch.equal(decoded_mask["w"], mask["w"])


def test_foreign_bytes_are_rejected():
    from safetensors.torch import save

    with pytest.raises(ValueError, match="payload"):
        decode(save({"x": torch.zeros(2)}, metadata={"format": "other"}))
