"""Each client's secrets, the keys derived from them, and the mask generator.

A client holds two X25519 key pairs, c (to encrypt the shares it sends) and s (to agree
pairwise mask seeds), and a 16-byte seed b for its self mask. Every derived key goes through
HKDF-SHA256 with an info string naming its purpose, the round and the clients, so no key is
reused across purposes, rounds or pairs. The PRG is AES-256-CTR's keystream read as uint64.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEED_BYTES = 16
KEY_BYTES = 32  # a raw X25519 key, private or public
_CONTEXT = b"fedprune/secagg/v1/"
_WORD = np.dtype("<u8")


@dataclass(frozen=True)
class ClientKeys:
    cipher: X25519PrivateKey  # c: share encryption
    mask: X25519PrivateKey  # s: pairwise masks
    seed: bytes  # b: self mask

    @classmethod
    def generate(cls) -> ClientKeys:
        return cls(X25519PrivateKey.generate(), X25519PrivateKey.generate(), os.urandom(SEED_BYTES))

    def public(self) -> bytes:
        """What the client advertises: c_pk ‖ s_pk, raw bytes."""
        return public_bytes(self.cipher) + public_bytes(self.mask)


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def split_public(blob: bytes) -> tuple[X25519PublicKey, X25519PublicKey]:
    """An advertised c_pk ‖ s_pk back to the two keys."""
    if len(blob) != 2 * KEY_BYTES:
        raise ValueError(f"advertised keys are {len(blob)} bytes, not {2 * KEY_BYTES}")
    c_pk, s_pk = blob[:KEY_BYTES], blob[KEY_BYTES:]
    return X25519PublicKey.from_public_bytes(c_pk), X25519PublicKey.from_public_bytes(s_pk)


def _derive(secret: bytes, purpose: bytes, round_: int, *ids: int) -> bytes:
    info = _CONTEXT + purpose + struct.pack(f">Q{len(ids)}I", round_, *ids)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def pair_seed(own: X25519PrivateKey, peer: X25519PublicKey, u: int, v: int, round_: int) -> bytes:
    """s_uv, the same from either side: the ids go into the context in ascending order."""
    return _derive(own.exchange(peer), b"mask", round_, min(u, v), max(u, v))


def share_key(
    own: X25519PrivateKey, peer: X25519PublicKey, sender: int, recipient: int, round_: int
) -> bytes:
    """The AES-GCM key for shares from sender to recipient (one key per direction)."""
    return _derive(own.exchange(peer), b"shares", round_, sender, recipient)


def self_mask_key(seed: bytes, owner: int, round_: int) -> bytes:
    """The PRG key of client `owner`'s self mask, from its seed b."""
    return _derive(seed, b"self-mask", round_, owner)


def prg(key: bytes, length: int) -> np.ndarray:
    """`length` pseudorandom uint64 words: AES-256-CTR's keystream (each key is used once)."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    return np.frombuffer(encryptor.update(bytes(_WORD.itemsize * length)), dtype=_WORD)


def add_pairwise_masks(acc: np.ndarray, owner: int, seeds: Mapping[int, bytes]) -> None:
    """acc += Σ_{v>owner} PRG(s_ov) − Σ_{v<owner} PRG(s_ov), mod 2^64, in place.

    Clients mask with it; the server, with a dropped client as `owner`, adds the terms that
    client's peers put in y but that client can no longer cancel.
    """
    for peer, seed in seeds.items():
        if peer > owner:
            acc += prg(seed, acc.size)
        else:
            acc -= prg(seed, acc.size)
