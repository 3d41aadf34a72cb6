"""The protocol's messages as explicit bytes, so they can travel as round artifacts and their
sizes are `len()` of what is sent, never estimates.

Every message is one frame: a header (magic, version, kind, round, sender, entry count; 22
bytes) and entries, each a (client id, length-prefixed blob) pair (8 bytes + blob), sorted by
id. What the blobs hold per kind:

- ADVERTISE (client → server): {u: c_pk ‖ s_pk}, two raw X25519 public keys.
- KEYS (server → clients): {v: c_pk ‖ s_pk} for every client that advertised (U1).
- SHARES (client u → server): {v: nonce ‖ AES-GCM ciphertext of u's shares for v}.
- CIPHERTEXTS (server → client v): {u: the blob u addressed to v}, for every u in U2.
- MASKED (client → server): {u: y_u as little-endian uint64}.
- UNMASK_REQUEST (server → clients): {v: b""} for every client that sent y_v (U3).
- UNMASK (client → server): {v: b"s" ‖ share of v's s key, or b"b" ‖ share of v's seed b}.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

MAGIC = b"FPSA"
VERSION = 1
SERVER = 0xFFFFFFFF  # the sender id of the server's messages; clients' ids are below it
_HEADER = struct.Struct(">4sBBQII")  # magic, version, kind, round, sender, entry count
_ENTRY = struct.Struct(">II")  # client id, blob length


class ProtocolError(Exception):
    """A round cannot go on: too few clients left, a malformed or tampered message, or a
    request a client must refuse. The message says which and who."""


class Kind(IntEnum):
    ADVERTISE = 1
    KEYS = 2
    SHARES = 3
    CIPHERTEXTS = 4
    MASKED = 5
    UNMASK_REQUEST = 6
    UNMASK = 7


@dataclass(frozen=True)
class Message:
    kind: Kind
    round_: int
    sender: int
    entries: dict[int, bytes]


def check_id(client: int) -> None:
    """Client ids travel as uint32 and must not collide with `SERVER`."""
    if not 0 <= client < SERVER:
        raise ValueError(f"client id {client} must be in [0, {SERVER})")


def encode(kind: Kind, round_: int, sender: int, entries: Mapping[int, bytes]) -> bytes:
    parts = [_HEADER.pack(MAGIC, VERSION, kind, round_, sender, len(entries))]
    for key in sorted(entries):
        blob = entries[key]
        parts += [_ENTRY.pack(key, len(blob)), blob]
    return b"".join(parts)


def decode(data: bytes, kind: Kind, round_: int) -> Message:
    """Parse one frame; raise unless it is well formed, of `kind` and for `round_`."""
    if len(data) < _HEADER.size:
        raise ProtocolError(f"{kind.name} message of {len(data)} bytes is shorter than a header")
    magic, version, got_kind, got_round, sender, count = _HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise ProtocolError(f"not a secure aggregation v{VERSION} message (magic {magic!r})")
    if got_kind != kind or got_round != round_:
        raise ProtocolError(
            f"expected {kind.name} for round {round_}, got kind {got_kind} for round {got_round}"
        )
    entries: dict[int, bytes] = {}
    at = _HEADER.size
    for _ in range(count):
        if at + _ENTRY.size > len(data):
            raise ProtocolError(f"{kind.name} from {sender} is truncated")
        key, length = _ENTRY.unpack_from(data, at)
        at += _ENTRY.size
        if key in entries or at + length > len(data):
            raise ProtocolError(f"{kind.name} from {sender}: duplicate or truncated entry {key}")
        entries[key] = data[at : at + length]
        at += length
    if at != len(data):
        raise ProtocolError(f"{kind.name} from {sender} has {len(data) - at} trailing bytes")
    return Message(Kind(got_kind), got_round, sender, entries)
