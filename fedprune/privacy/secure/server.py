"""The server's side of one secure aggregation round: it relays, checks counts, and in the end
removes the masks, learning only Σ x_u over the clients whose masked inputs it received.

Each method takes the messages of whichever clients answered the previous step; who answered
defines the round's client sets (the paper's U1 ⊇ U2 ⊇ U3 ⊇ U5):

- `collect_keys`: U1, the clients that advertised keys → the key list for all of them;
- `route_shares`: U2, those that sent shares → each one's ciphertexts;
- `request_unmask`: U3, those that sent a masked input → the list of survivors;
- `unmask`: U5, the survivors that answered → the sum, mod 2^64.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedprune.privacy.secure import keys, shares, wire
from fedprune.privacy.secure.keys import KEY_BYTES, SEED_BYTES
from fedprune.privacy.secure.wire import SERVER, Kind, ProtocolError


class Server:
    def __init__(self, *, round_: int, threshold: int) -> None:
        if threshold < 1:
            raise ValueError(f"threshold {threshold} must be at least 1")
        self.round, self.threshold = round_, threshold
        self._advertised: dict[int, bytes] = {}  # U1 → c_pk ‖ s_pk
        self._shared: set[int] = set()  # U2
        self._masked: dict[int, np.ndarray] = {}  # U3 → y_u

    def _decode(self, data: bytes, kind: Kind) -> wire.Message:
        return wire.decode(data, kind, self.round)

    def _message(self, kind: Kind, entries: dict[int, bytes]) -> bytes:
        return wire.encode(kind, self.round, SERVER, entries)

    def _require(self, count: int, what: str) -> None:
        if count < self.threshold:
            raise ProtocolError(
                f"round {self.round}: only {count} {what}, fewer than the threshold "
                f"{self.threshold}; the round cannot complete"
            )

    def collect_keys(self, adverts: Iterable[bytes]) -> bytes:
        """The key list every advertising client gets (the same bytes for all)."""
        for data in adverts:
            message = self._decode(data, Kind.ADVERTISE)
            blob = message.entries.get(message.sender)
            if len(message.entries) != 1 or blob is None or message.sender in self._advertised:
                raise ProtocolError(f"advert from client {message.sender} is malformed or repeated")
            keys.split_public(blob)  # raises unless two raw X25519 keys
            self._advertised[message.sender] = blob
        self._require(len(self._advertised), "clients advertised keys")
        return self._message(Kind.KEYS, self._advertised)

    def route_shares(self, messages: Iterable[bytes]) -> dict[int, bytes]:
        """Client v → the sealed shares addressed to v by every other client in U2."""
        sealed: dict[int, dict[int, bytes]] = {}
        for data in messages:
            message = self._decode(data, Kind.SHARES)
            sender = message.sender
            if sender not in self._advertised or sender in sealed:
                raise ProtocolError(f"shares from client {sender}, unknown or repeated")
            if message.entries.keys() != self._advertised.keys() - {sender}:
                raise ProtocolError(f"client {sender} did not send shares to every other client")
            sealed[sender] = message.entries
        self._shared = set(sealed)
        self._require(len(self._shared), "clients shared keys")
        return {
            v: self._message(Kind.CIPHERTEXTS, {u: sealed[u][v] for u in sealed if u != v})
            for v in sealed
        }

    def request_unmask(self, masked: Iterable[bytes]) -> bytes:
        """The survivor list U3, once the masked inputs are in."""
        for data in masked:
            message = self._decode(data, Kind.MASKED)
            sender, blob = message.sender, message.entries.get(message.sender)
            if sender not in self._shared or sender in self._masked or blob is None:
                raise ProtocolError(f"masked input from client {sender}, unknown or repeated")
            if len(blob) % 8 or (self._masked and len(blob) != 8 * self._length()):
                raise ProtocolError(f"masked input from client {sender} has the wrong length")
            self._masked[sender] = np.frombuffer(blob, dtype="<u8")
        self._require(len(self._masked), "clients sent masked inputs")
        return self._message(Kind.UNMASK_REQUEST, dict.fromkeys(self._masked, b""))

    def unmask(self, responses: Iterable[bytes]) -> np.ndarray:
        """Σ x_u over U3 as uint64: reconstruct b_u of survivors and s_v of dropped clients
        from the survivors' shares, then remove every mask those leave in Σ y_u."""
        dropped = self._shared - self._masked.keys()
        s_shares: dict[int, dict[int, bytes]] = {v: {} for v in dropped}
        b_shares: dict[int, dict[int, bytes]] = {u: {} for u in self._masked}
        responded: set[int] = set()
        for data in responses:
            message = self._decode(data, Kind.UNMASK)
            w = message.sender
            if w not in self._masked or w in responded:
                raise ProtocolError(f"unmask response from client {w}, not a survivor or repeated")
            responded.add(w)
            if message.entries.keys() != self._shared:
                raise ProtocolError(f"client {w} did not send a share for every client of U2")
            for v, blob in message.entries.items():
                kind, share, size = blob[:1], blob[1:], KEY_BYTES if v in dropped else SEED_BYTES
                if kind != (b"s" if v in dropped else b"b") or len(share) != size:
                    raise ProtocolError(f"client {w}'s share of client {v} is of the wrong kind")
                (s_shares if v in dropped else b_shares)[v][w] = share
        self._require(len(responded), "survivors sent their shares")
        indices = shares.share_indices(self._advertised)
        total = np.zeros(self._length(), dtype=np.uint64)
        for u, y in self._masked.items():
            seed = shares.combine(b_shares[u], self.threshold, indices)
            total += y
            total -= keys.prg(keys.self_mask_key(seed, u, self.round), total.size)
        for v in dropped:
            s_v = self._recover_mask_key(v, s_shares[v], indices)
            seeds = {
                u: keys.pair_seed(s_v, keys.split_public(self._advertised[u])[1], v, u, self.round)
                for u in self._masked
            }
            keys.add_pairwise_masks(total, v, seeds)
        return total

    def _recover_mask_key(
        self, v: int, held: dict[int, bytes], indices: dict[int, int]
    ) -> X25519PrivateKey:
        """Dropped client v's s key, checked against the public key it advertised."""
        s_v = X25519PrivateKey.from_private_bytes(shares.combine(held, self.threshold, indices))
        if keys.public_bytes(s_v) != self._advertised[v][KEY_BYTES:]:
            raise ProtocolError(
                f"the s key recovered for dropped client {v} does not match its keys"
            )
        return s_v

    def _length(self) -> int:
        return next(iter(self._masked.values())).size
