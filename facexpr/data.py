"""Datasets in the image layout `<root>/<expression>/<name>.png`, from a local folder or S3.

Both locations are read through the `store` interface, so training treats FER2013 and
people's relabeled images the same way.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from facexpr.errors import DataError, FacexprError
from facexpr.labels import EXPRESSIONS, INDEX
from facexpr.model import CROP_SIZE
from facexpr.store import open_store


@dataclass
class Dataset:
    """48×48 uint8 images with FER2013-order integer labels, and where they came from."""

    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) int64
    source: str
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        per_class = np.bincount(self.labels, minlength=len(EXPRESSIONS))
        return {name: int(n) for name, n in zip(EXPRESSIONS, per_class, strict=True)}

    @staticmethod
    def concat(parts: list[Dataset], source: str) -> Dataset:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Dataset(np.zeros((0, CROP_SIZE, CROP_SIZE), np.uint8), np.zeros(0, np.int64), source)
        return Dataset(np.concatenate([p.images for p in parts]),
                       np.concatenate([p.labels for p in parts]), source,
                       sum(p.skipped for p in parts))


def _to_crop(data: bytes) -> np.ndarray | None:
    """A stored training image as a 48×48 gray array; None when it cannot be read."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            gray = im.convert("L")
            if gray.size != (CROP_SIZE, CROP_SIZE):
                gray = gray.resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(gray, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError):
        return None


def load_layout(uri: str, required: bool = True, workers: int = 8) -> Dataset:
    """Read every `<expression>/<name>.png` under URI (a local folder or s3://bucket/prefix).

    Folders that are not one of the seven expressions are ignored; unreadable files are
    counted in `skipped`, not fatal. With `required`, an empty location is an error.
    """
    try:
        store = open_store(uri)
        keys = [k for k in store.list_keys() if k.split("/", 1)[0] in INDEX and k.lower().endswith(".png")]
    except FacexprError:
        raise
    except Exception as exc:
        raise DataError(f"Cannot list {uri}: {exc}") from exc
    if not keys and required:
        raise DataError(f"No images found under {uri}: expected {uri}/<expression>/<name>.png "
                        f"with <expression> one of {', '.join(EXPRESSIONS)}.")
    keys.sort()
    with ThreadPoolExecutor(workers) as pool:
        crops = list(pool.map(lambda k: _to_crop(store.get(k)), keys))
    good = [(c, INDEX[k.split("/", 1)[0]]) for c, k in zip(crops, keys, strict=True) if c is not None]
    images = np.stack([c for c, _ in good]) if good else np.zeros((0, CROP_SIZE, CROP_SIZE), np.uint8)
    labels = np.array([label for _, label in good], dtype=np.int64)
    return Dataset(images, labels, uri, skipped=len(keys) - len(good))
