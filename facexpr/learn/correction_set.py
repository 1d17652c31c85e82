"""The corrections as training data: every crop a person labelled in the relabeled store, with who
gave it (its group), which photo it came from and how it was cut (its crop geometry), and the folds
that cross-fitting splits them into.

The folds (`assign_folds`): corrections are kept together by who gave them where that is known
for more than one group (the `group` a save records: the app's browser session, or the person a
folder import names); a single labeller's corrections are kept together by photo instead (every
face of one photo on one side), and crops with no photo recorded stand alone. The units are dealt
round-robin into K folds in the order of their hash, so a unit's fold does not depend on the order
the store lists it.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from facexpr.core.types import IMAGE_CROP
from facexpr.learn.data import Dataset, layout_keys, read_keys
from facexpr.photo.geometry import LEGACY, CropGeometry
from facexpr.storage.store import open_store


@dataclass
class Corrections:
    """The relabeled store's crops with the label a person gave, and the group each belongs to."""

    data: Dataset
    groups: list[str]
    photos: list[str]  # "image:<sha256>" of the uploaded photo, else "crop:<file>" (see `photo_of`)
    saved_at: list[str]
    geometries: list[str]  # how each crop was cut (Prediction.crop); LEGACY where it was not recorded

    def __len__(self) -> int:
        return len(self.data)

    def subset(self, index: np.ndarray) -> Corrections:
        return Corrections(self.data.subset(index), [self.groups[i] for i in index],
                           [self.photos[i] for i in index], [self.saved_at[i] for i in index],
                           [self.geometries[i] for i in index])

    def cut_for(self, geometry: CropGeometry) -> tuple[Corrections, dict[str, int]]:
        """The corrections a model with GEOMETRY can learn from (crops cut its way, or the image
        itself), and how many were left out, by the geometry they were cut with."""
        fits = [g in (geometry.name, IMAGE_CROP) for g in self.geometries]
        left_out: dict[str, int] = {}
        for g, ok in zip(self.geometries, fits, strict=True):
            if not ok:
                left_out[g] = left_out.get(g, 0) + 1
        return self.subset(np.flatnonzero(fits)), left_out


def load_corrections(uri: str, workers: int = 8) -> Corrections:
    """Every `<label>/<sha>.png` under URI with its metadata's group (see `group_of`)."""
    store = open_store(uri)
    data = read_keys(store, sorted(layout_keys(store.list_keys())), uri, workers)
    with ThreadPoolExecutor(workers) as pool:
        metadata = list(pool.map(store.metadata, data.keys))
    return Corrections(data, [group_of(k, m) for k, m in zip(data.keys, metadata, strict=True)],
                       [photo_of(k, m) for k, m in zip(data.keys, metadata, strict=True)],
                       [m.get("saved-at", "") for m in metadata],
                       [m.get("crop-geometry") or LEGACY for m in metadata])


def group_of(key: str, metadata: dict[str, str]) -> str:
    """Who a correction came from, as far as is known: the recorded group, else its photo, else itself."""
    if metadata.get("group"):
        return "group:" + metadata["group"]
    return photo_of(key, metadata)


def photo_of(key: str, metadata: dict[str, str]) -> str:
    """The uploaded photo a correction was cut from, else the crop itself."""
    if metadata.get("image-sha256"):
        return "image:" + metadata["image-sha256"]
    return "crop:" + key.rsplit("/", 1)[-1]


def _unit_hash(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) / 16**12


@dataclass(frozen=True)
class Folds:
    """Which fold each correction is in (-1: none, when there is too little to split)."""

    of: np.ndarray  # fold index per correction
    k: int  # folds made: 0 when fewer than two units, else min(asked, units)
    by: str  # what a unit is: "people" (recorded groups), "photos" or "faces"
    units: int

    def sizes(self) -> list[int]:
        return [int((self.of == f).sum()) for f in range(self.k)]


def assign_folds(corrections: Corrections, k: int) -> Folds:
    """Split CORRECTIONS into up to K folds of whole units (see the module's docstring)."""
    people = len(set(corrections.groups)) >= 2
    units = corrections.groups if people else corrections.photos
    by = "people" if people and any(u.startswith("group:") for u in units) else "photos"
    if all(u.startswith("crop:") for u in units):
        by = "faces"
    order = sorted(set(units), key=lambda u: (_unit_hash(u), u))
    folds = min(k, len(order)) if len(order) >= 2 else 0
    if not folds:
        return Folds(np.full(len(units), -1), 0, by, len(order))
    fold_of_unit = {u: i % folds for i, u in enumerate(order)}
    return Folds(np.array([fold_of_unit[u] for u in units], np.int64), folds, by, len(order))
