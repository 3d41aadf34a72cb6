"""What each client keeps between rounds, by key: small JSON values (the id of the mask a
client holds) and byte blobs (a client's personal model). One store for every kind of client
state, published with each round, restored on resume and read back in any pod, so adding a new
piece of state is one `set` or `put_blob` call in the round driver.

Layout in a round's folder: `state.json` holds every value and, per blob key, the round that
published each client's latest blob; a blob lives in the round that wrote it, as
`state/<key>/client-000003.bin`, so a round publishes only the blobs it changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fedprune.io.store import RunStore

STATE = "state.json"


def blob_name(key: str, client: int) -> str:
    return f"state/{key}/client-{client:06d}.bin"


@dataclass
class ClientState:
    values: dict[str, dict[int, Any]] = field(default_factory=dict)
    """key → client → JSON value."""
    blob_rounds: dict[str, dict[int, int]] = field(default_factory=dict)
    """key → client → the round whose folder holds the client's latest blob."""
    store: RunStore | None = None
    """Where blobs of earlier rounds are read from (None: all are in memory)."""
    _blobs: dict[tuple[str, int], bytes] = field(default_factory=dict)
    """Blobs read or written by this process."""
    _unpublished: set[tuple[str, int]] = field(default_factory=set)

    @classmethod
    def after(cls, store: RunStore, round_: int) -> ClientState:
        """The state published with round `round_` (empty before round 1)."""
        if round_ == 0:
            return cls(store=store)
        raw = json.loads(store.load_round(round_, [STATE])[STATE])

        def by_client(table: dict[str, dict[str, Any]]) -> dict[str, dict[int, Any]]:
            return {key: {int(c): v for c, v in rows.items()} for key, rows in table.items()}

        return cls(by_client(raw["values"]), by_client(raw["blobs"]), store)

    def of(self, key: str) -> dict[int, Any]:
        """Every client's value for `key`."""
        return dict(self.values.get(key, {}))

    def set(self, key: str, clients: list[int], value: Any) -> None:
        self.values.setdefault(key, {}).update(dict.fromkeys(clients, value))

    def has_blob(self, key: str, client: int) -> bool:
        return client in self.blob_rounds.get(key, {})

    def clients_with(self, key: str) -> list[int]:
        return sorted(self.blob_rounds.get(key, {}))

    def put_blob(self, key: str, client: int, data: bytes) -> None:
        self._blobs[key, client] = data
        self._unpublished.add((key, client))
        self.blob_rounds.setdefault(key, {})[client] = -1  # until the round is published

    def blob(self, key: str, client: int) -> bytes:
        if (key, client) not in self._blobs:
            assert self.store is not None, f"no {key} blob of client {client} in memory"
            name = blob_name(key, client)
            round_ = self.blob_rounds[key][client]
            self._blobs[key, client] = self.store.load_round(round_, [name])[name]
        return self._blobs[key, client]

    def objects(self, round_: int) -> dict[str, bytes]:
        """What round `round_` publishes of the state: the table and the blobs it wrote."""
        written = {blob_name(k, c): self._blobs[k, c] for k, c in sorted(self._unpublished)}
        for key, client in self._unpublished:
            self.blob_rounds[key][client] = round_
        self._unpublished.clear()
        table = {"values": self.values, "blobs": self.blob_rounds}
        return {STATE: json.dumps(table, sort_keys=True).encode(), **written}
