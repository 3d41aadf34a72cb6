"""No client update trusted unchecked: hostile payloads fail fast as PayloadError, the
screening rejects bad updates with their reasons, quarantines them and lets the round go on,
and a round with too few good updates fails without touching the last good model."""

import dataclasses
import json
import time
from pathlib import Path

import pytest
import torch
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient

from fedprune import steps
from fedprune.config import CompressionConfig
from fedprune.engine import local as engine
from fedprune.io.codec import _save, decode, encode
from fedprune.io.payload_checks import PayloadError, expected_of
from fedprune.io.store import LocalBackend, RunStore
from fedprune.records import ClientUpdate, GlobalModel

WEIGHTS = {"fc.weight": torch.randn(64, 100), "fc.bias": torch.randn(64)}
MASK = {"fc.weight": torch.rand(64, 100) > 0.9}
PREVIOUS = GlobalModel(WEIGHTS, MASK)
EXPECTED = expected_of(WEIGHTS)
SPARSE = encode({"fc.weight": WEIGHTS["fc.weight"] * MASK["fc.weight"], "fc.bias": WEIGHTS["fc.bias"]}, MASK, CompressionConfig())  # fmt: skip
INT8 = encode(WEIGHTS, MASK, CompressionConfig(values="int8"))


def quick_reject(payload: bytes, match: str) -> None:
    started = time.perf_counter()
    with pytest.raises(PayloadError, match=match):
        decode(payload, expected=EXPECTED)
    assert time.perf_counter() - started < 1.0


def test_a_tensor_declared_huge_is_refused_before_any_allocation():
    """The issue's 213-byte upload declaring a 1000×1000000 tensor (4 GB once decoded)."""
    layout = {
        "fc.weight": {"c": "sparse", "dtype": "float32", "shape": [1000, 1000000], "v": "fp32",
                      "n": 0, "m": "delta", "w": 1},
        "fc.bias": {"c": "dense", "dtype": "float32", "shape": [64], "v": "fp32"},
    }  # fmt: skip
    tensors = {
        "fc.weight:v": torch.zeros(0),
        "fc.weight:m": torch.zeros(0, dtype=torch.uint8),
        "fc.bias:v": torch.zeros(64),
    }
    payload = _save(tensors, layout, None)
    assert len(payload) < 1000
    quick_reject(payload, "tensor 'fc.weight' is float32 \\[1000, 1000000\\]")


def test_a_mask_stream_that_inflates_without_bound_is_cut_at_the_expected_size():
    bomb = zstandard.ZstdCompressor(level=1).compress(bytes(50_000_000))  # ~2 KB, 50 MB inflated
    layout = {
        "fc.weight": {"c": "sparse", "dtype": "float32", "shape": [64, 100], "v": "fp32",
                      "n": 0, "m": "zstd", "k": -1, "z": len(bomb)},
        "fc.bias": {"c": "dense", "dtype": "float32", "shape": [64], "v": "fp32"},
    }  # fmt: skip
    tensors = {
        "fc.weight:v": torch.zeros(0),
        "fc.weight:m": torch.frombuffer(bytearray(bomb), dtype=torch.uint8),
        "fc.bias:v": torch.zeros(64),
    }
    quick_reject(_save(tensors, layout, None), "inflates to more than")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda t, lay: lay["fc.weight"].update(n=5), "expected torch.float32 × 5"),
        (lambda t, lay: lay["fc.weight"].update(dtype="complex64"), "malformed layout"),
        (lambda t, lay: lay["fc.bias"].update(q=float("inf")), "malformed layout"),
        (lambda t, lay: t.update({"fc.bias:v": torch.zeros(64, dtype=torch.complex64)}), "complex"),
        (lambda t, lay: t.update({"fc.weight:m": t["fc.weight:m"][:-3]}), "bad mask stream"),
        (lambda t, lay: lay.pop("fc.bias") and t.pop("fc.bias:v"), "missing: \\['fc.bias'\\]"),
    ],
    ids=["count", "complex-dtype", "inf-scale", "complex-values", "short-mask", "missing"],
)
def test_each_kind_of_malformed_payload_is_one_payload_error(change, match):
    from safetensors.torch import load

    from fedprune.io.codec import _header

    layout, _ = _header(SPARSE)
    tensors = load(SPARSE)
    change(tensors, layout)
    quick_reject(_save(tensors, layout, None), match)


def test_valid_payloads_still_decode_exactly():
    weights, mask = decode(SPARSE, expected=EXPECTED)
    assert torch.equal(mask["fc.weight"], MASK["fc.weight"])
    assert torch.equal(weights["fc.weight"], WEIGHTS["fc.weight"] * MASK["fc.weight"])


@settings(max_examples=150, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from([SPARSE, INT8]),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
    junk=st.binary(max_size=64),
)
def test_random_and_mutated_payloads_decode_or_raise_payload_error(base, edits, cut, junk):
    data = bytearray(base)
    for where, value in edits:
        data[where % len(data)] = value
    payload = bytes(data[: cut % (len(data) + 1)] if cut is not None else data) + junk
    try:
        weights, _ = decode(payload, expected=EXPECTED)
    except PayloadError:
        return
    assert {n: tuple(t.shape) for n, t in weights.items()} == {
        n: s for n, (s, _) in EXPECTED.items()
    }


@given(st.binary(max_size=300))
@settings(max_examples=150, deadline=1000)
def test_random_bytes_are_a_payload_error(junk):
    with pytest.raises(PayloadError):
        decode(junk, expected=EXPECTED)


def update(client: int, payload: bytes = SPARSE, n: int = 10) -> ClientUpdate:
    return ClientUpdate(client=client, num_samples=n, payload=payload, train_loss=0.1)


def test_screening_names_each_bad_update_and_passes_the_rest(make_config):
    cfg = make_config(data={"num_clients": 6})
    nan = dict(WEIGHTS, **{"fc.bias": torch.full((64,), float("nan"))})
    updates = [
        update(0),
        update(1, encode(nan, MASK, CompressionConfig())),
        update(2, n=10**12),
        update(3, n=-5),
        update(4, b"\x00" * 20),
        update(5, encode(WEIGHTS, {}, CompressionConfig())),  # no masks at all
    ]
    rejected = steps.screen(updates, PREVIOUS, cfg, held_rows=[100] * 6)
    reasons = {r.client: r.reason for r in rejected}
    assert set(reasons) == {1, 2, 3, 4, 5}
    assert "non-finite values in 'fc.bias'" in reasons[1]
    assert "above the 100 rows it holds" in reasons[2]
    assert "≤ 0" in reasons[3]
    assert "malformed payload" in reasons[4]
    assert "masks for ['fc.weight']" in reasons[5]
    with pytest.raises(steps.RoundFailed, match="only 1 of 6 updates passed"):
        steps.screen(updates, PREVIOUS, make_config(data={"num_clients": 6}, aggregation={"min_clients": 2}), [100] * 6)  # fmt: skip


def test_outlier_norms_and_oversized_uploads_are_rejected(make_config):
    far = encode({n: t * 100 for n, t in WEIGHTS.items()}, MASK, CompressionConfig())
    near = [update(c, encode({n: t + 0.01 * c for n, t in WEIGHTS.items()}, MASK, CompressionConfig())) for c in range(4)]  # fmt: skip
    cfg = make_config(aggregation={"outlier_norm": 5.0})
    rejected = steps.screen([*near, update(4, far)], PREVIOUS, cfg, None)
    assert [r.client for r in rejected] == [4] and "median" in rejected[0].reason
    bound = len(SPARSE) - 1
    small = make_config(aggregation={"max_upload_bytes": bound})
    empty = {"fc.weight": torch.zeros(64, 100, dtype=torch.bool)}
    sparser = encode({n: t * 0 for n, t in WEIGHTS.items()}, empty, CompressionConfig())
    (too_big,) = steps.screen([update(0), update(1, sparser)], PREVIOUS, small, None)
    assert too_big.client == 0 and f"above the bound of {bound}" in too_big.reason


def hostile(client: int, payload_of):
    """Replace `client`'s upload in every round by `payload_of(real payload)`."""
    real = steps.train_clients

    def train(*args, **kwargs):
        return [
            dataclasses.replace(u, payload=payload_of(u.payload)) if u.client == client else u
            for u in real(*args, **kwargs)
        ]

    return train


def poisoned(payload: bytes) -> bytes:
    weights, mask = decode(payload)
    weights = {n: torch.full_like(t, float("nan")) for n, t in weights.items()}
    return encode(weights, mask, CompressionConfig())


def test_a_hostile_client_is_quarantined_and_the_run_goes_on(make_config, mnist_small, monkeypatch):
    cfg = make_config(rounds=2, aggregation={"method": "median", "min_clients": 3})
    monkeypatch.setattr(steps, "train_clients", hostile(2, poisoned))
    result = engine.run_experiment(cfg, data=mnist_small)
    assert [m.rejected_updates for m in result.history] == [1, 1]
    assert "non-finite" in result.history[0].rejected["2"]
    assert result.history[-1].test["accuracy"] > 0.5
    folder = Path(cfg.store) / "test" / result.run_id / "rounds" / "0001" / "rejected"
    assert json.loads((folder / "reasons.json").read_text())[0]["client"] == 2
    assert (folder / "client-000002.bin").stat().st_size > 0
    client = MlflowClient(cfg.tracking)
    history = client.get_metric_history(result.run_id, "rejected_updates")
    assert [p.value for p in history] == [1.0, 1.0]
    assert "non-finite" in client.get_run(result.run_id).data.tags["rejected.round_0001"]


def test_too_few_good_updates_fail_the_round_and_keep_the_last_good_model(
    make_config, mnist_small, monkeypatch
):
    cfg = make_config(rounds=2, aggregation={"min_clients": 4})
    calls = []

    def broken_in_round_2(payload: bytes) -> bytes:
        calls.append(1)
        return payload if len(calls) == 1 else poisoned(payload)

    monkeypatch.setattr(steps, "train_clients", hostile(1, broken_in_round_2))
    with pytest.raises(steps.RoundFailed, match="only 3 of 4 updates passed"):
        engine.run_experiment(cfg, data=mnist_small)
    (run,) = (Path(cfg.store) / "test").iterdir()
    assert RunStore(LocalBackend(cfg.store), "test", run.name).published_rounds() == [1]


def test_a_non_finite_aggregate_is_never_returned(make_config):
    """Finite updates, but a server step that overflows float32."""
    cfg = make_config(aggregation={"method": "fedavgm", "server_lr": 1e38})
    big = {n: t + 10 for n, t in WEIGHTS.items()}
    with pytest.raises(steps.RoundFailed, match="not finite"):
        steps.aggregate([update(0, encode(big, MASK, CompressionConfig()))], cfg, PREVIOUS)


def test_an_unscreened_malformed_payload_names_its_client(make_config):
    with pytest.raises(PayloadError, match="client 7: "):
        steps.aggregate([update(7, b"\x00" * 40)], make_config(), PREVIOUS)
