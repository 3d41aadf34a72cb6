"""A client's side of one secure aggregation round (Bonawitz et al. 2017, honest-but-curious).

Four calls, each taking the server's last message and returning the client's next one:
`advertise` → `share_keys` → `masked_input` → `unmask`. The client's secrets (s, c, b and
the shares it holds of others') leave it only as AES-GCM ciphertexts or, in `unmask`, as the
one kind of share of each peer that the dropout recovery needs.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from fedprune.privacy.secure import keys, shares, wire
from fedprune.privacy.secure.fixed_point import FixedPoint
from fedprune.privacy.secure.keys import KEY_BYTES, ClientKeys
from fedprune.privacy.secure.wire import Kind, ProtocolError

_PLAINTEXT = KEY_BYTES + keys.SEED_BYTES  # share of s ‖ share of b


class Client:
    def __init__(
        self, client_id: int, *, round_: int, threshold: int, encoding: FixedPoint | None = None
    ) -> None:
        wire.check_id(client_id)
        if threshold < 1:
            raise ValueError(f"threshold {threshold} must be at least 1")
        self.id, self.round, self.threshold = client_id, round_, threshold
        self.encoding = encoding or FixedPoint()
        self._keys = ClientKeys.generate()
        self._peers: dict[int, tuple[X25519PublicKey, X25519PublicKey]] = {}  # U1: (c, s)
        self._held: dict[int, bytes] = {}  # v in U2 → this client's share of v's s ‖ b
        self._revealed: dict[int, bytes] = {}  # v → b"s" or b"b", whichever share was sent

    def _message(self, kind: Kind, entries: dict[int, bytes]) -> bytes:
        return wire.encode(kind, self.round, self.id, entries)

    def advertise(self) -> bytes:
        """Step 0: the public keys c_pk and s_pk."""
        return self._message(Kind.ADVERTISE, {self.id: self._keys.public()})

    def share_keys(self, keys_message: bytes) -> bytes:
        """Step 1: t-of-|U1| shares of s_sk and b, one sealed bundle per other client."""
        if self._peers:
            raise ProtocolError(f"client {self.id}: share_keys runs once per round")
        advertised = wire.decode(keys_message, Kind.KEYS, self.round).entries
        if advertised.get(self.id) != self._keys.public():
            raise ProtocolError(f"client {self.id}: the key list lacks its own keys")
        if len(set(advertised.values())) != len(advertised):
            raise ProtocolError(f"client {self.id}: two clients advertise the same keys")
        self._require(len(advertised), "advertised keys")
        self._peers = {v: keys.split_public(blob) for v, blob in advertised.items()}
        indices = shares.share_indices(advertised)
        s_private = self._keys.mask.private_bytes_raw()
        s_shares = shares.split(s_private, self.threshold, indices)
        b_shares = shares.split(self._keys.seed, self.threshold, indices)
        bundles = {v: s_shares[v] + b_shares[v] for v in advertised}
        self._held = {self.id: bundles.pop(self.id)}
        sealed = {
            v: shares.seal(
                self._share_key(v, sender=self.id, recipient=v), bundle, self.id, v, self.round
            )
            for v, bundle in bundles.items()
        }
        return self._message(Kind.SHARES, sealed)

    def masked_input(self, ciphertexts: bytes, x: np.ndarray) -> bytes:
        """Step 2: y = x + PRG(b) + Σ_{v>u} PRG(s_uv) − Σ_{v<u} PRG(s_uv) over U2, mod 2^64."""
        if len(self._held) != 1:
            raise ProtocolError(f"client {self.id}: masked_input must follow share_keys, once")
        message = wire.decode(ciphertexts, Kind.CIPHERTEXTS, self.round)
        senders = set(message.entries)
        if self.id in senders or not senders <= self._peers.keys():
            raise ProtocolError(f"client {self.id}: shares from clients that did not advertise")
        self._require(len(senders) + 1, "clients that shared keys")
        self.encoding.check_setting(len(self._peers))
        encoded = self.encoding.encode(x, client=self.id)
        held = {}  # kept only once every bundle opens, so a failed step leaves no trace
        for v, blob in message.entries.items():
            key = self._share_key(v, sender=v, recipient=self.id)
            held[v] = shares.unseal(key, blob, v, self.id, self.round)
            if len(held[v]) != _PLAINTEXT:
                raise ProtocolError(f"client {self.id}: shares from client {v} are malformed")
        self._held.update(held)
        y = encoded + keys.prg(
            keys.self_mask_key(self._keys.seed, self.id, self.round), encoded.size
        )
        seeds = {
            v: keys.pair_seed(self._keys.mask, self._peers[v][1], self.id, v, self.round)
            for v in senders
        }
        keys.add_pairwise_masks(y, self.id, seeds)
        return self._message(Kind.MASKED, {self.id: y.astype("<u8").tobytes()})

    def unmask(self, request: bytes) -> bytes:
        """Step 3: for each survivor its share of b, for each dropped client its share of s.

        Never both for one client: with b_v and s_v the server could strip every mask off y_v.
        The client remembers what it revealed and refuses any request that asks for the other.
        """
        survivors = set(wire.decode(request, Kind.UNMASK_REQUEST, self.round).entries)
        if self.id not in survivors or not survivors <= self._held.keys():
            raise ProtocolError(
                f"client {self.id}: the survivors {sorted(survivors)} must include it and be "
                "among the clients that shared keys"
            )
        self._require(len(survivors), "survivors")
        kinds = {v: b"b" if v in survivors else b"s" for v in self._held}
        for v, kind in kinds.items():
            before = self._revealed.get(v, kind)
            if before != kind:
                raise ProtocolError(
                    f"client {self.id} already revealed its {before.decode()}-share of client "
                    f"{v}; revealing the {kind.decode()}-share too would unmask that client's "
                    "input, so it refuses"
                )
        self._revealed.update(kinds)
        entries = {
            v: kind + (self._held[v][:KEY_BYTES] if kind == b"s" else self._held[v][KEY_BYTES:])
            for v, kind in kinds.items()
        }
        return self._message(Kind.UNMASK, entries)

    def _share_key(self, peer: int, *, sender: int, recipient: int) -> bytes:
        return keys.share_key(
            self._keys.cipher, self._peers[peer][0], sender, recipient, self.round
        )

    def _require(self, count: int, what: str) -> None:
        if count < self.threshold:
            raise ProtocolError(
                f"client {self.id}: {count} {what}, fewer than the threshold {self.threshold}; "
                "the round cannot complete"
            )
