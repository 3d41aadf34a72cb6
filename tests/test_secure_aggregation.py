import numpy as np
import pytest

from fedprune.privacy.secure import Client, FixedPoint, ProtocolError, Server, secure_sum
from fedprune.privacy.secure.wire import SERVER, Kind, decode, encode


def client_inputs(n: int, m: int, seed: int = 0, scale: float = 3.0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {10 + 7 * c: rng.normal(scale=scale, size=m) for c in range(n)}  # ids not 0..n-1


def fixed_sum(inputs: dict[int, np.ndarray], clients) -> np.ndarray:
    return sum(FixedPoint().encode(inputs[c], client=c) for c in clients)


class Round:
    """The protocol driven step by step, so a test can look at or alter any message."""

    def __init__(self, inputs: dict[int, np.ndarray], threshold: int) -> None:
        self.inputs = inputs
        self.clients = {c: Client(c, round_=3, threshold=threshold) for c in inputs}
        self.server = Server(round_=3, threshold=threshold)
        self.keys = self.server.collect_keys(c.advertise() for c in self.clients.values())
        self.routed = self.server.route_shares(
            c.share_keys(self.keys) for c in self.clients.values()
        )

    def masked(self, survivors) -> dict[int, bytes]:
        return {c: self.clients[c].masked_input(self.routed[c], self.inputs[c]) for c in survivors}


def test_sum_is_exact_without_dropouts():
    inputs = client_inputs(6, 5000)
    result = secure_sum(inputs, threshold=4, round_=2)
    assert result.fixed_total.dtype == np.uint64
    np.testing.assert_array_equal(result.fixed_total, fixed_sum(inputs, inputs))
    assert result.total.dtype == np.float64
    assert np.abs(result.total - sum(inputs.values())).max() <= 2.0**-24 * len(inputs)
    assert result.survivors == tuple(sorted(inputs)) and result.dropped == ()


@pytest.mark.parametrize("dropped_count", [1, 3])
def test_sum_is_exact_over_survivors_with_dropouts(dropped_count):
    inputs = client_inputs(8, 2000, seed=dropped_count)
    dropped = set(sorted(inputs)[1 : 1 + dropped_count])
    result = secure_sum(inputs, threshold=5, dropped_after_sharing=dropped)
    survivors = [c for c in sorted(inputs) if c not in dropped]
    assert result.survivors == tuple(survivors) and result.dropped == tuple(sorted(dropped))
    np.testing.assert_array_equal(result.fixed_total, fixed_sum(inputs, survivors))
    for c in dropped:
        assert result.bytes_sent[c]["masked_input"] == result.bytes_sent[c]["unmask"] == 0
        assert result.bytes_sent[c]["shares"] > 0


def test_fewer_survivors_than_threshold_raises():
    inputs = client_inputs(6, 100)
    with pytest.raises(ProtocolError, match="only 3 clients sent masked inputs.*threshold 4"):
        secure_sum(inputs, threshold=4, dropped_after_sharing=set(sorted(inputs)[:3]))


def test_masked_input_looks_random():
    inputs = client_inputs(5, 10_000)
    masked = Round(inputs, threshold=3).masked(inputs)
    for c, message in masked.items():
        y = np.frombuffer(decode(message, Kind.MASKED, 3).entries[c], dtype="<u8")
        x = FixedPoint().encode(inputs[c], client=c)
        assert np.mean(y != x) > 0.999
        assert 0.45 < (y >> np.uint64(63)).mean() < 0.55  # bits balanced, top to bottom
        assert 0.45 < (y & np.uint64(1)).mean() < 0.55


def test_overflow_setting_and_bound_are_checked():
    with pytest.raises(ValueError, match=r"10 clients × bound 1e\+06 × 2\^40 \(frac_bits\)"):
        secure_sum(client_inputs(10, 10), threshold=6, frac_bits=40, bound=1e6)
    FixedPoint(frac_bits=24, bound=2.0**20).check_setting(2**19 - 1)
    with pytest.raises(ValueError, match="524288 clients"):
        FixedPoint(frac_bits=24, bound=2.0**20).check_setting(2**19)
    inputs = client_inputs(4, 10, scale=0.1)
    inputs[17][3] = -5.0
    with pytest.raises(ValueError, match="client 17: input reaches .x. = 5, above .* bound 4"):
        secure_sum(inputs, threshold=3, bound=4.0)


def test_a_client_never_reveals_both_shares_of_a_peer():
    inputs = client_inputs(5, 100)
    protocol = Round(inputs, threshold=3)
    protocol.masked(inputs)
    everyone = encode(Kind.UNMASK_REQUEST, 3, SERVER, dict.fromkeys(inputs, b""))
    victim = sorted(inputs)[-1]
    without_victim = encode(Kind.UNMASK_REQUEST, 3, SERVER, {c: b"" for c in inputs if c != victim})
    client = protocol.clients[sorted(inputs)[0]]
    client.unmask(everyone)  # b-shares of all, the victim's included
    with pytest.raises(ProtocolError, match=f"already revealed its b-share of client {victim}"):
        client.unmask(without_victim)  # would add the victim's s-share


def test_tampered_share_is_detected():
    inputs = client_inputs(4, 100)
    protocol = Round(inputs, threshold=3)
    recipient = sorted(inputs)[0]
    message = decode(protocol.routed[recipient], Kind.CIPHERTEXTS, 3)
    sender = sorted(message.entries)[1]
    forged = dict(message.entries)
    forged[sender] = forged[sender][:-1] + bytes([forged[sender][-1] ^ 1])
    tampered = encode(Kind.CIPHERTEXTS, 3, SERVER, forged)
    with pytest.raises(ProtocolError, match=f"client {sender} sent client {recipient} fail"):
        protocol.clients[recipient].masked_input(tampered, inputs[recipient])
    rerouted = dict(message.entries)  # a genuine ciphertext, passed off as another sender's
    other = sorted(message.entries)[0]
    rerouted[other] = message.entries[sender]
    with pytest.raises(ProtocolError, match="fail authentication"):
        protocol.clients[recipient].masked_input(
            encode(Kind.CIPHERTEXTS, 3, SERVER, rerouted), inputs[recipient]
        )


def test_negative_values_round_trip():
    encoding = FixedPoint(frac_bits=24)
    x = np.array([-1.5, -(2.0**-24), 0.0, 2.0**-24, 3.25, -1000.0, 1000.0])
    ring = encoding.encode(x, client=0)
    assert ring[0] > np.uint64(2**63)  # two's complement
    np.testing.assert_array_equal(encoding.decode(ring), x)
    inputs = {0: -np.abs(client_inputs(1, 500)[10]), 1: -np.ones(500), 2: np.zeros(500)}
    result = secure_sum(inputs, threshold=2)
    assert (result.total < 0).all()
    assert np.abs(result.total - (inputs[0] + inputs[1])).max() <= 2.0**-24 * 3


def test_message_sizes_are_reported():
    inputs = client_inputs(5, 1000)
    result = secure_sum(inputs, threshold=3)
    for c in inputs:
        sent = result.bytes_sent[c]
        assert 8 * 1000 < sent["masked_input"] < 8 * 1000 + 64
        assert 0 < sent["advertise"] < sent["shares"] < sent["masked_input"]
        assert result.bytes_received[c]["shares"] == sent["shares"]  # n−1 bundles either way
    assert result.server_seconds > 0


def test_a_million_coordinates():
    inputs = client_inputs(10, 1_000_000, scale=1.0)
    result = secure_sum(inputs, threshold=7, dropped_after_sharing={17})
    survivors = [c for c in inputs if c != 17]
    np.testing.assert_array_equal(result.fixed_total, fixed_sum(inputs, survivors))
