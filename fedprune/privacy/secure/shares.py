"""Shamir shares of a client's secrets and their encryption for one recipient.

Sharing is pycryptodome's (over GF(2^128), 16-byte secrets): a longer secret, such as a
32-byte X25519 private key, is shared 16 bytes at a time with the same indices. A share's
index is the recipient's position among the round's advertised clients, counted from 1
(`share_indices`), so clients and server derive the same map from the same list.

Shares travel through the server sealed with AES-GCM; the associated data names round,
sender and recipient, so the server can neither read them nor pass one off to someone else.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping

from Crypto.Protocol.SecretSharing import Shamir
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedprune.privacy.secure.wire import ProtocolError

_CHUNK = 16  # the secret size pycryptodome's Shamir shares
_NONCE = 12
_TAG = 16
_AD = b"fedprune/secagg/v1/shares"


def share_indices(clients: Iterable[int]) -> dict[int, int]:
    """Client id → Shamir index (1, 2, …) in ascending id order."""
    return {client: index for index, client in enumerate(sorted(clients), start=1)}


def split(secret: bytes, threshold: int, indices: Mapping[int, int]) -> dict[int, bytes]:
    """Client id → its share of `secret` (as long as the secret); any `threshold` recover it."""
    if len(secret) % _CHUNK:
        raise ValueError(f"secret of {len(secret)} bytes is not a multiple of {_CHUNK}")
    by_index: dict[int, list[bytes]] = {index: [] for index in indices.values()}
    for at in range(0, len(secret), _CHUNK):
        for index, share in Shamir.split(threshold, len(indices), secret[at : at + _CHUNK]):
            by_index[index].append(share)
    return {client: b"".join(by_index[index]) for client, index in indices.items()}


def combine(shares: Mapping[int, bytes], threshold: int, indices: Mapping[int, int]) -> bytes:
    """The secret from the shares of the first `threshold` clients (by id) in `shares`."""
    if len(shares) < threshold:
        raise ProtocolError(
            f"{len(shares)} shares cannot recover a secret of threshold {threshold}"
        )
    chosen = sorted(shares)[:threshold]  # pycryptodome wants exactly `threshold` shares
    length = len(shares[chosen[0]])
    return b"".join(
        Shamir.combine([(indices[client], shares[client][at : at + _CHUNK]) for client in chosen])
        for at in range(0, length, _CHUNK)
    )


def _associated(sender: int, recipient: int, round_: int) -> bytes:
    return _AD + struct.pack(">QII", round_, sender, recipient)


def seal(key: bytes, plaintext: bytes, sender: int, recipient: int, round_: int) -> bytes:
    nonce = os.urandom(_NONCE)
    associated = _associated(sender, recipient, round_)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def unseal(key: bytes, blob: bytes, sender: int, recipient: int, round_: int) -> bytes:
    """The shares `sender` sealed for `recipient`; raises if the server altered or rerouted them."""
    failed = ProtocolError(
        f"round {round_}: the shares client {sender} sent client {recipient} fail "
        "authentication (tampered with, truncated or misrouted on the way)"
    )
    if len(blob) < _NONCE + _TAG:
        raise failed
    try:
        return AESGCM(key).decrypt(
            blob[:_NONCE], blob[_NONCE:], _associated(sender, recipient, round_)
        )
    except InvalidTag as error:
        raise failed from error
