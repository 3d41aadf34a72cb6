"""Images in class folders, torchvision's ImageFolder layout (`dataset: imagefolder`):
`<path>/train/<class>/<image>` and `<path>/test/<class>/<image>`, or kept at sites,
`<path>/clients/<site>/train/<class>/<image>`. Class ids follow the sorted class-folder names
over all splits. Images are resized to `size`×`size`, scaled to [-1, 1], and read with Pillow
(torchvision is not a dependency: its wheels do not install beside the pinned CPU torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field

from fedprune.tasks.datasets.base import DATASETS, DataError, DataParams, DataShape, FederatedData
from fedprune.uris import Uri

MODES = {1: "L", 3: "RGB"}
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class ImageFolderParams(DataParams):
    path: Uri
    size: Annotated[int, Field(ge=1)] = 32
    """Images are resized to size × size."""
    channels: Literal[1, 3] | None = None
    """Convert every image to grayscale (1) or RGB (3); unset, all images must share one
    mode (a mixed folder is an error naming the odd file)."""


def _images(folder: Path) -> dict[str, list[Path]]:
    if not folder.is_dir():
        raise DataError(f"data.path: {folder} is missing (one sub-folder per class)")
    classes = {
        c.name: sorted(f for f in c.rglob("*") if f.suffix.lower() in SUFFIXES)
        for c in sorted(folder.iterdir())
        if c.is_dir()
    }
    if not any(classes.values()):
        raise DataError(f"data.path: {folder} holds no images in class folders")
    return classes


class ImageFolderSource:
    def _read(self, file: Path, params: ImageFolderParams, mode: list[str]) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(file) as image:
                if params.channels is None:
                    if not mode:  # the first image's mode is every image's
                        mode.append(image.mode)
                    if image.mode != mode[0]:
                        raise DataError(
                            f"data.path: {file} is {image.mode} but the images before it are "
                            f"{mode[0]}: set data.channels (1 or 3) to convert them all"
                        )
                    wanted = "RGB" if mode[0] not in MODES.values() else mode[0]
                else:
                    wanted = MODES[params.channels]
                image = image.convert(wanted).resize((params.size, params.size))
                pixels = np.asarray(image, dtype=np.float32)
        except (UnidentifiedImageError, OSError) as error:
            raise DataError(f"data.path: cannot read image {file}: {error}") from None
        pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        return pixels / 127.5 - 1.0

    def load(self, params: ImageFolderParams, task: str) -> FederatedData:
        if task != "classification":
            raise DataError(
                f"data.dataset: imagefolder labels images by class: task must be classification, not {task}"
            )
        root = Path(params.path)
        clients = root / "clients"
        parts = (
            [(site.name, site / "train") for site in sorted(clients.iterdir()) if site.is_dir()]
            if clients.is_dir()
            else [("", root / "train")]
        )
        found = {name: _images(folder) for name, folder in parts}
        test = _images(root / "test")
        names = sorted({c for classes in [*found.values(), test] for c in classes})
        ids, mode = {name: k for k, name in enumerate(names)}, []

        def split(classes: dict[str, list[Path]]) -> tuple[torch.Tensor, torch.Tensor]:
            files = [(f, ids[c]) for c, fs in classes.items() for f in fs]
            x = np.stack([self._read(f, params, mode) for f, _ in files])
            return torch.from_numpy(x), torch.tensor([label for _, label in files])

        xs, ys, rows, start = [], [], [], 0
        for _, classes in found.items():
            x, y = split(classes)
            xs.append(x)
            ys.append(y)
            rows.append(np.arange(start, start + len(x)))
            start += len(x)
        x_test, y_test = split(test)
        x_train, y_train = torch.cat(xs), torch.cat(ys)
        kept = len(x_train[: params.train_subset])
        sites = tuple(name for name, _ in parts if name)
        return FederatedData(
            name=f"imagefolder:{params.path}",
            x_train=x_train[: params.train_subset],
            y_train=y_train[: params.train_subset],
            x_test=x_test[: params.test_subset],
            y_test=y_test[: params.test_subset],
            shape=DataShape(tuple(x_train.shape[1:]), len(names)),
            sites=sites,
            site_rows=tuple(r[r < kept] for r in rows) if sites else (),
        )

    def data_shape(self, params: ImageFolderParams, task: str) -> DataShape:
        return self.load(params, task).shape


DATASETS.register("imagefolder", ImageFolderParams)(ImageFolderSource())
