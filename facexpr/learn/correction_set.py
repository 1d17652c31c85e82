"""The corrections as training data: every crop a person labelled in the relabeled store, with who
gave it (its group) and how it was cut (its crop geometry), and the held-out split by group.

The split (`split_heldout`): corrections are grouped by who gave them where known (the `group` a
save records: the app's browser session, or the person a folder import names), else by the
uploaded photo (every face of one photo together); a group is held out when the hash of its id
falls below the held-out fraction, so a group never changes side between retrains, and at least
one group is held out once there are two.
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
    saved_at: list[str]
    geometries: list[str]  # how each crop was cut (Prediction.crop); LEGACY where it was not recorded

    def __len__(self) -> int:
        return len(self.data)

    def subset(self, index: np.ndarray) -> Corrections:
        return Corrections(self.data.subset(index), [self.groups[i] for i in index],
                           [self.saved_at[i] for i in index], [self.geometries[i] for i in index])

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
                       [m.get("saved-at", "") for m in metadata],
                       [m.get("crop-geometry") or LEGACY for m in metadata])


def group_of(key: str, metadata: dict[str, str]) -> str:
    """Who a correction came from, as far as is known: the recorded group, else its photo, else itself."""
    if metadata.get("group"):
        return "group:" + metadata["group"]
    if metadata.get("image-sha256"):
        return "image:" + metadata["image-sha256"]
    return "crop:" + key.rsplit("/", 1)[-1]


def _unit_hash(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) / 16**12


def split_heldout(groups: list[str], fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train index, held-out index): whole groups, held out when their hash < FRACTION; at least
    one group held out (the lowest hash) once there are two groups and FRACTION > 0."""
    if fraction <= 0 or not groups:
        return np.arange(len(groups)), np.zeros(0, np.int64)
    score = {g: _unit_hash(g) for g in set(groups)}
    held = {g for g, s in score.items() if s < fraction}
    if not held and len(score) >= 2:
        held = {min(score, key=score.get)}
    if len(held) == len(score):  # never hold out everything: keep the highest-hash group to learn from
        held.discard(max(score, key=score.get))
    mask = np.array([g in held for g in groups])
    return np.flatnonzero(~mask), np.flatnonzero(mask)
