"""A whole secure aggregation round in one process: every client and the server exchange the
real messages, so the sum, the dropout recovery and the byte counts are those of a deployment."""

from __future__ import annotations

import time
from collections.abc import Callable, Set
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from fedprune.privacy.secure import wire
from fedprune.privacy.secure.client import Client
from fedprune.privacy.secure.fixed_point import DEFAULT_BOUND, DEFAULT_FRAC_BITS, FixedPoint
from fedprune.privacy.secure.server import Server

STEPS = ("advertise", "shares", "masked_input", "unmask")
"""What clients send, in order."""
SERVER_STEPS = ("keys", "shares", "unmask_request")
"""What the server sends each client, in order: each answers the client step before it."""

_T = TypeVar("_T")


@dataclass(frozen=True)
class SecureSumResult:
    total: np.ndarray
    """float64: Σ x_u over the survivors, decoded from `fixed_total`."""
    fixed_total: np.ndarray
    """uint64: Σ encode(x_u) mod 2^64 over the survivors, exactly."""
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    bytes_sent: dict[int, dict[str, int]]
    """Client → step (`STEPS`) → bytes it uploaded; 0 for steps it never reached."""
    bytes_received: dict[int, dict[str, int]]
    """Client → step (`SERVER_STEPS`) → bytes the server sent it; 0 for those it missed."""
    server_seconds: float
    """Time spent in the server's four steps (the clients' work excluded)."""


def secure_sum(
    inputs: dict[int, np.ndarray],
    *,
    threshold: int,
    dropped_after_sharing: Set[int] = frozenset(),
    round_: int = 0,
    frac_bits: int = DEFAULT_FRAC_BITS,
    bound: float = DEFAULT_BOUND,
) -> SecureSumResult:
    """Σ inputs over the clients that did not drop, as the server would learn it and nothing
    more. Clients in `dropped_after_sharing` advertise and share keys, then vanish before
    sending their masked input; the survivors' shares recover their masks."""
    if not dropped_after_sharing <= inputs.keys():
        raise ValueError(
            f"dropped clients {sorted(dropped_after_sharing - inputs.keys())} have no input"
        )
    for client in inputs:
        wire.check_id(client)
    encoding = FixedPoint(frac_bits, bound)
    encoding.check_setting(len(inputs))
    clients = {
        c: Client(c, round_=round_, threshold=threshold, encoding=encoding) for c in sorted(inputs)
    }
    survivors = tuple(c for c in clients if c not in dropped_after_sharing)
    sent = {c: dict.fromkeys(STEPS, 0) for c in clients}
    received = {c: dict.fromkeys(SERVER_STEPS, 0) for c in clients}
    server = Server(round_=round_, threshold=threshold)
    server_seconds = 0.0

    def serve(step: Callable[[list[bytes]], _T], messages: list[bytes]) -> _T:
        nonlocal server_seconds
        start = time.perf_counter()
        answer = step(messages)
        server_seconds += time.perf_counter() - start
        return answer

    def upload(step: str, who: tuple[int, ...], send: Callable[[Client], bytes]) -> list[bytes]:
        messages = {c: send(clients[c]) for c in who}
        for c, message in messages.items():
            sent[c][step] = len(message)
        return list(messages.values())

    everyone = tuple(clients)
    key_list = serve(server.collect_keys, upload("advertise", everyone, Client.advertise))
    routed = serve(
        server.route_shares, upload("shares", everyone, lambda c: c.share_keys(key_list))
    )
    masked = upload("masked_input", survivors, lambda c: c.masked_input(routed[c.id], inputs[c.id]))
    request = serve(server.request_unmask, masked)
    fixed_total = serve(server.unmask, upload("unmask", survivors, lambda c: c.unmask(request)))
    for c in clients:
        received[c]["keys"] = len(key_list)
        received[c]["shares"] = len(routed[c])
        received[c]["unmask_request"] = len(request) if c in survivors else 0
    return SecureSumResult(
        total=encoding.decode(fixed_total),
        fixed_total=fixed_total,
        survivors=survivors,
        dropped=tuple(sorted(dropped_after_sharing)),
        bytes_sent=sent,
        bytes_received=received,
        server_seconds=server_seconds,
    )
