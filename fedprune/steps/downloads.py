"""What a round's clients download: the full broadcast, its values alone for a client that
holds its mask, or the global values under a client's own mask (LotteryFL's personal masks)."""

from __future__ import annotations

from dataclasses import dataclass

from fedprune.config import ExperimentConfig
from fedprune.io.codec import decode, encode, encode_values, mask_id
from fedprune.pruning.masks import Mask, Weights
from fedprune.records import Downloads, GlobalModel


def broadcast(global_model: GlobalModel, cfg: ExperimentConfig) -> bytes:
    return encode(global_model.weights, global_model.mask, cfg.compression, seed=cfg.seed)


def downloads(
    global_model: GlobalModel,
    payload: bytes,
    clients: list[int],
    *,
    held: dict[int, str],
    personal: dict[int, Mask],
    cfg: ExperimentConfig,
) -> Downloads:
    """Who downloads what, given `payload` (the full broadcast), `held`, the mask id each
    client last received (after the round every sampled client holds `Downloads.mask_id`),
    and `personal`, the masks clients keep for themselves (LotteryFL): such a client
    downloads the values under its own mask."""
    current = mask_id(global_model.mask)
    reuse = cfg.compression.values_only_downloads and cfg.compression.encoding == "sparse"
    own = {c: personal[c] for c in clients if c in personal} if reuse else {}
    shared = [c for c in clients if c not in own]
    holders = sum(held.get(c) == current for c in shared) if reuse else 0
    values = (
        encode_values(global_model.weights, global_model.mask, cfg.compression, seed=cfg.seed)
        if holders
        else None
    )
    mine = {
        c: encode_values(global_model.weights, mask, cfg.compression, seed=cfg.seed)
        for c, mask in own.items()
    }
    return Downloads(payload, values, len(shared) - holders, holders, current, mine)


@dataclass(frozen=True)
class Personal:
    """A client's own state when its round starts (LotteryFL): the mask it kept from its last
    round, and what it downloaded (the global values under that mask; None when it got the
    whole broadcast)."""

    mask: Mask
    download: bytes | None = None

    def received(self, broadcast: Weights) -> Weights:
        """The global weights as this client has them."""
        return broadcast if self.download is None else decode(self.download, self.mask)[0]


def personal_starts(masks: dict[int, Mask], sent: Downloads) -> dict[int, Personal]:
    return {c: Personal(mask, sent.personal.get(c)) for c, mask in masks.items()}
