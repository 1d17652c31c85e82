"""Saving a person's answer: the face crop under its true label, the upload once beside it.

When the store cannot take them (an outage, or a wrong bucket or credentials) they go to the
store outbox, which later saves and `python -m facexpr sync` deliver; nothing a person gave is lost.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from facexpr.core.config import Settings
from facexpr.core.errors import FacexprError, ImageError, StoreError
from facexpr.core.labels import CROP_SIZE, parse_label
from facexpr.photo.imaging import encode_png
from facexpr.storage.relabel.keys import (
    ORIGINALS,
    RELABELED,
    crop_key,
    original_key,
    planned_location,
    role_uri,
)
from facexpr.storage.relabel.latest import answer_time
from facexpr.storage.relabel.outbox import deliver, discard_older_answers, flush_outbox, outbox_for
from facexpr.storage.store import ImageStore, open_store

if TYPE_CHECKING:
    from facexpr.core.types import Prediction

FLUSH_ON_SAVE = 20  # outbox items retried after a successful save; the rest wait for `sync`


@dataclass(frozen=True)
class SaveResult:
    """Where a person's answer went. `location` is the full address (`s3://bucket/prefix/key` or a
    local path) even when queued: it is where the item will be once the outbox is delivered."""

    label: str
    predicted: str
    key: str  # relative to the relabeled root: `<label>/<sha256>.png`
    location: str
    sha256: str  # of the PNG crop
    saved_at: str
    queued: bool = False  # the crop waits in the outbox
    reason: str | None = None  # why something was queued (the store's message, naming the setting to fix)
    already_stored: bool = False
    original_key: str | None = None
    original_location: str | None = None
    original_queued: bool = False
    synced: int = 0  # earlier outbox items delivered along with this save
    pending: int = 0  # outbox items still waiting after this save
    crop_geometry: str | None = None  # how the crop was cut (Prediction.crop)

    @property
    def confirmed(self) -> bool:
        return self.label == self.predicted

    @property
    def object_key(self) -> str:
        """What a history record should point at: the crop's full address."""
        return self.location

    @property
    def folder(self) -> str:
        """Where the label's crops are (the location without the crop's content-hash file name)."""
        return self.location.rsplit("/", 1)[0] + "/"

    def message(self, how_to_change: bool = True) -> str:
        """What a person needs: the label kept, where, and (HOW_TO_CHANGE) how to change it on a page
        where choosing another expression does that; never the file's hash name."""
        verb = f"Confirmed as {self.label}" if self.confirmed else f"Saved as {self.label}"
        change = "Choose another expression and save again to change it."
        if self.queued:
            return (f"{verb}, but the store could not take it now: it waits in the local outbox and will go "
                    f"to {self.folder} on a later save or `python -m facexpr sync`. Reason: {self.reason}")
        text = f"{verb} in {self.folder}" + (" (it was already there)" if self.already_stored else "")
        if self.original_queued:
            text += f". The original image waits in the outbox ({self.reason})"
        if self.synced:
            text += f". Also delivered {self.synced} item(s) from the outbox"
        return f"{text}. {change}" if how_to_change else f"{text}."


def check_crop(crop: np.ndarray) -> np.ndarray:
    crop = np.asarray(crop)
    if crop.shape != (CROP_SIZE, CROP_SIZE):
        raise ImageError(f"A face crop must be {CROP_SIZE}×{CROP_SIZE} gray pixels, not {crop.shape}.")
    if crop.dtype != np.uint8:
        crop = np.clip(crop, 0, 255).astype(np.uint8)
    return crop


def save_crop(settings: Settings, crop: np.ndarray, label: str, *, predicted: str, confidence: float,
              model_version: str, original: bytes | None = None, image_sha256: str | None = None,
              face_index: int = 0, replaces: SaveResult | None = None, now: datetime | None = None,
              group: str | None = None, crop_geometry: str | None = None) -> SaveResult:
    """Store CROP under LABEL (and ORIGINAL once). Raises LabelError/ImageError for bad input and
    StoreError only when even the outbox cannot keep the item; every store failure is queued.
    CROP_GEOMETRY says how the crop was cut (Prediction.crop), so a retrain never mixes crops cut
    two ways without saying so."""
    label = parse_label(label)
    predicted = parse_label(predicted)
    png = encode_png(check_crop(crop))
    sha = hashlib.sha256(png).hexdigest()
    key = crop_key(label, sha)
    saved_at = answer_time(now)  # orders this answer among others to the same face (relabel.latest)
    metadata = {"predicted-expression": predicted, "confidence": f"{float(confidence):.6f}",
                "model-version": model_version, "saved-at": saved_at, "label": label}
    # Who and which photo it came from, so a retrain keeps one person's faces on one side of its split.
    if image_sha256:
        metadata["image-sha256"] = image_sha256
    if group:
        metadata["group"] = group
    if crop_geometry:
        metadata["crop-geometry"] = crop_geometry

    ops: list[tuple[str, str, str, bytes | None, dict[str, str]]] = [(RELABELED, "put", key, png, metadata)]
    kept_as = None  # the original's key
    if original:
        original_sha = image_sha256 or hashlib.sha256(original).hexdigest()
        kept_as = original_key(original, original_sha)
        ops.append((ORIGINALS, "put", kept_as, original,
                    {"sha256": original_sha, "saved-at": saved_at, "face-crop": f"{face_index}:{key}"}))
    if replaces is not None and replaces.key != key:
        # The person changed their mind about this face: the earlier answer must not train the model.
        ops.append((RELABELED, "delete", replaces.key, None, {"saved-at": saved_at}))

    outbox = outbox_for(settings)
    stores: dict[str, ImageStore] = {}
    reason: str | None = None  # set by the first failure; both roles live in one bucket (or disk),
    #                            so the rest of this save is queued without waiting on it again
    outcome: dict[str, tuple[str, bool]] = {}  # role+key → (location, queued)
    already = False
    for role, op, k, data, meta in ops:
        uri = role_uri(settings, role)
        if reason is None:
            try:
                if role not in stores:
                    stores[role] = open_store(uri)
                store = stores[role]
                if role == RELABELED and op == "put":
                    discard_older_answers(outbox, k, meta)
                found = deliver(store, op, k, data, meta, role)
                already = already or (found and role == RELABELED)
                outbox.discard(role, k)  # this newer intent supersedes anything queued for the key
                outcome[role + k] = (store.location(k), False)
                continue
            except StoreError as exc:  # StoreUnavailable too
                reason = str(exc)
        outbox.add(role, op, k, data, meta, reason=reason or "", target=uri)
        outcome[role + k] = (planned_location(settings, role, k), True)

    synced = 0
    if reason is None and len(outbox):
        try:
            synced = flush_outbox(settings, limit=FLUSH_ON_SAVE).sent
        except FacexprError:
            pass  # the save itself succeeded; `sync` will report what is wrong
    location, queued = outcome[RELABELED + key]
    original_location, original_queued = outcome[ORIGINALS + kept_as] if kept_as else (None, False)
    return SaveResult(label=label, predicted=predicted, key=key, location=location, sha256=sha,
                      saved_at=saved_at, queued=queued, reason=reason,
                      already_stored=already, original_key=kept_as, original_location=original_location,
                      original_queued=original_queued, synced=synced, pending=len(outbox),
                      crop_geometry=crop_geometry)


def save_relabel(settings: Settings, prediction: Prediction, face_index: int, label: str,
                 original: bytes | None = None, *, replaces: SaveResult | None = None,
                 now: datetime | None = None, group: str | None = None) -> SaveResult:
    """Store face FACE_INDEX of PREDICTION under LABEL (the page's call); see `save_crop`."""
    if not 0 <= face_index < len(prediction.faces):
        raise ImageError(f"This image has {len(prediction.faces)} face(s); "
                         f"there is no face {face_index + 1}.")
    face = prediction.faces[face_index]
    return save_crop(settings, face.crop, label, predicted=face.expression, confidence=face.confidence,
                     model_version=prediction.model_version, original=original,
                     image_sha256=prediction.image_sha256, face_index=face_index, replaces=replaces, now=now,
                     group=group, crop_geometry=prediction.crop or None)

