"""The mask streams of a sparse payload: `bitmap` (one bit per entry), `delta` (fixed-width
gaps between kept indices) and `zstd` (gaps split at `k` bits, high parts entropy-coded by
zstandard, low bits raw); `fedprune.io.codec` picks the smallest per tensor."""

from __future__ import annotations

import math

import numpy as np
import zstandard

# zstd as an entropy coder: level 1 with the longest minimum match, so that few spurious matches
# in near-random streams displace Huffman-coded literals (levels 3–9 do worse here; 19 is ~15×
# slower for ≤1% gain)
ZSTD_PARAMS = zstandard.ZstdCompressionParameters.from_level(1, min_match=7)


def _narrowest(top: int) -> np.dtype:
    return np.dtype("<u1" if top < 2**8 else "<u2" if top < 2**16 else "<u4")


def _planes(a: np.ndarray, width: np.dtype) -> bytes:
    """Byte planes apart (all low bytes, then the next, …): each plane has its own statistics."""
    return a.astype(width).view(np.uint8).reshape(-1, width.itemsize).T.tobytes()


def _unplanes(buf: bytes, width: np.dtype, count: int) -> np.ndarray:
    planes = np.frombuffer(buf, np.uint8).reshape(width.itemsize, count)
    return np.ascontiguousarray(planes.T).view(width).reshape(count).astype(np.int64)


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(compression_params=ZSTD_PARAMS).compress(data)


def _zstd_split(gaps: np.ndarray, k: int) -> tuple[bytes, dict]:
    high = gaps >> k
    width = _narrowest(int(high.max()) if high.size else 0)
    frame = _zstd(_planes(high, width))
    low = (gaps & ((1 << k) - 1))[:, None] >> np.arange(k - 1, -1, -1)
    bits = np.packbits((low & 1).astype(np.uint8).reshape(-1)).tobytes()
    return frame + bits, {"k": k, "w": width.itemsize, "z": len(frame)}


def mask_streams(keep: np.ndarray) -> dict[str, tuple[bytes, dict]]:
    """Every codec's stream for one flat boolean mask, with the parameters to decode it."""
    indices = np.flatnonzero(keep)
    gaps = np.diff(indices, prepend=-1) - 1  # ≥ 0
    width = _narrowest(int(gaps.max()) if gaps.size else 0)
    bitmap = np.packbits(keep).tobytes()
    streams = {
        "bitmap": (bitmap, {}),
        "delta": (gaps.astype(width).tobytes(), {"w": width.itemsize}),
    }
    if gaps.size:
        # zstd over the bitmap (dense masks) or over Rice-split gaps (sparse ones); the Rice
        # parameter that wins sits at or just below log2(mean gap)
        top = max(0, int(math.log2(keep.size / gaps.size)))
        zbitmap = _zstd(bitmap)
        tries = [(zbitmap, {"k": -1, "z": len(zbitmap)})]
        tries += [_zstd_split(gaps, k) for k in range(max(0, top - 3), top + 1)]
        streams["zstd"] = min(tries, key=lambda s: len(s[0]))
    return streams


def _inflate(frame: bytes, size: int) -> bytes:
    """Exactly `size` bytes out of a zstd frame, reading at most one byte more: a frame that
    inflates further (a decompression bomb) or less is an error, never a large allocation."""
    reader = zstandard.ZstdDecompressor(max_window_size=1 << 24).stream_reader(frame)
    out = bytearray()
    while len(out) <= size:
        chunk = reader.read(size + 1 - len(out))
        if not chunk:
            break
        out += chunk
    if len(out) != size:
        raise ValueError(f"zstd frame inflates to {'more than ' * (len(out) > size)}"
                         f"{len(out)} bytes, not {size}")  # fmt: skip
    return bytes(out)


def _length(stream: bytes, size: int, what: str) -> bytes:
    if len(stream) != size:
        raise ValueError(f"{what} of {len(stream)} bytes, not {size}")
    return stream


def decode_mask(stream: bytes, codec: str, *, params: dict, numel: int, kept: int) -> np.ndarray:
    """The flat mask of `numel` entries with `kept` set, from a stream `mask_streams` wrote;
    ValueError for a stream of any other length, size or count."""
    if codec == "bitmap" or (codec == "zstd" and params.get("k", 0) < 0):
        bitmap = (numel + 7) // 8
        if codec == "bitmap":
            packed = _length(stream, bitmap, "bitmap")
        else:
            packed = _inflate(_length(stream, params["z"], "zstd bitmap"), bitmap)
        keep = np.unpackbits(np.frombuffer(packed, np.uint8), count=numel).astype(bool)
        if int(keep.sum()) != kept:
            raise ValueError(f"bitmap keeps {int(keep.sum())}, the layout says {kept}")
        return keep
    width = np.dtype(f"<u{params['w']}") if params.get("w") in (1, 2, 4) else None
    if width is None:
        raise ValueError(f"gap width {params.get('w')!r}")
    if codec == "delta":
        raw = _length(stream, kept * width.itemsize, "delta stream")
        gaps = np.frombuffer(raw, width).astype(np.int64)
    elif codec == "zstd":
        k, split = params["k"], params["z"]
        if not (0 <= k <= 32 and 0 <= split <= len(stream)):
            raise ValueError(f"rice parameter {k} or split {split}")
        high = _unplanes(_inflate(stream[:split], kept * width.itemsize), width, kept)
        low_bits = _length(stream[split:], (kept * k + 7) // 8, "low bits")
        bits = np.unpackbits(np.frombuffer(low_bits, np.uint8), count=kept * k)
        low = bits.reshape(kept, k).astype(np.int64) @ (1 << np.arange(k - 1, -1, -1))
        gaps = (high << k) | low
    else:
        raise ValueError(f"unknown mask codec {codec!r}")
    positions = np.cumsum(gaps + 1) - 1
    if positions.size and positions[-1] >= numel:
        raise ValueError(f"kept index {positions[-1]} beyond {numel} entries")
    keep = np.zeros(numel, dtype=bool)
    keep[positions] = True
    return keep
