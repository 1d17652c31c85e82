"""Answers to predictions made elsewhere: what a prediction leaves in the shared store so that any
replica can later take a person's answer for it, exactly as the classify page does.

A prediction served by the API keeps, under the `predictions/` root (a sibling of `relabeled/`
and `originals/`: `s3://BUCKET/<parent>/predictions/` or `FACEXPR_DATA_DIR/predictions`):

    <id>/prediction.json   model version, image hash, faces mode, history record ids, and per face
                           its box, answer and the 48×48 crop the model saw (PNG, base64): ~3 KB a face
    <id>/original.<ext>    the uploaded file, only when the team keeps uploads (FACEXPR_API_KEEP_UPLOADS):
                           then an answer stores it under `originals/` as the page does
    <id>/answer-<i>.json   the answer given for face i (so a changed answer moves the crop, on any replica)

By default the upload itself is not kept: what feedback needs is the crops the model saw. A team
that wants to re-crop old corrections later (say, with a better face finder) keeps uploads.
Everything here is needed only to take feedback, so it is swept after the feedback window
(FACEXPR_API_FEEDBACK_DAYS, default 7) by each replica, at most once an hour (`sweep`); on S3 a
lifecycle rule on the `predictions/` prefix does the same without listing (docs/deploy.md).

An answer goes through `facexpr.storage.relabel.save_relabel` (same store, keys, metadata and outbox as
the page) and is noted in the history on the prediction's own records.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

from facexpr.core.config import Settings
from facexpr.core.errors import FacexprError, HistoryBuffered, StoreError
from facexpr.core.types import Box, FaceResult, Prediction
from facexpr.photo.geometry import LEGACY
from facexpr.photo.imaging import encode_png, image_extension
from facexpr.storage.history import History
from facexpr.storage.relabel import SaveResult, save_relabel
from facexpr.storage.store import ImageStore, open_store

log = logging.getLogger(__name__)

PREDICTIONS = "predictions"
_ID = re.compile(r"^[0-9a-f]{32}$")
CACHE_SIZE = 256  # recent predictions kept in process: feedback to the same replica needs no read
NO_PHOTO = np.zeros((0, 0), np.uint8)  # feedback needs the crops, never the decoded photo
FEEDBACK_DAYS = 7.0  # how long a prediction can take an answer (FACEXPR_API_FEEDBACK_DAYS)
SWEEP_EVERY_S = 3600.0  # a replica sweeps expired predictions at most this often


class UnknownPrediction(FacexprError):
    """No prediction with this id is kept (never made, or expired from the store)."""


def predictions_uri(settings: Settings) -> str:
    """The predictions root: beside the relabeled prefix in S3 (training never reads it), else
    `data_dir/predictions`."""
    if settings.s3_bucket:
        parent = settings.s3_prefix.strip("/").rpartition("/")[0]
        return f"s3://{settings.s3_bucket}/{parent + '/' if parent else ''}{PREDICTIONS}/"
    return str(Path(settings.data_dir) / PREDICTIONS)


def new_id() -> str:
    return uuid.uuid4().hex


def check_id(prediction_id: str) -> str:
    if not _ID.match(prediction_id or ""):
        raise UnknownPrediction(f"{prediction_id!r} is not a prediction id (32 hex digits).")
    return prediction_id


@dataclass
class Kept:
    """A prediction as feedback needs it."""

    id: str
    prediction: Prediction
    original: bytes | None
    record_ids: list[str]


def _png_b64(crop: np.ndarray) -> str:
    return base64.b64encode(encode_png(crop)).decode("ascii")


def _crop(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("L"), dtype=np.uint8)


def _document(kept: Kept) -> dict:
    p = kept.prediction
    return {"id": kept.id, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "model_version": p.model_version, "image_sha256": p.image_sha256, "mode": p.mode,
            "crop": p.crop,
            "record_ids": kept.record_ids, "latency_ms": p.latency_ms,
            "original": f"original.{image_extension(kept.original)}" if kept.original else None,
            "faces": [{"box": f.box.as_list(), "probabilities": [float(v) for v in f.probabilities],
                       "crop_png": _png_b64(f.crop)} for f in p.faces]}


class AnswerBook:
    """Keeps predictions for feedback (shared store + a small in-process cache) and takes answers."""

    def __init__(self, settings: Settings, keep_uploads: bool = False,
                 feedback_days: float = FEEDBACK_DAYS) -> None:
        self.settings, self.keep_uploads, self.feedback_days = settings, keep_uploads, feedback_days
        self._cache: OrderedDict[str, Kept] = OrderedDict()
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def _store(self) -> ImageStore:
        return open_store(predictions_uri(self.settings))

    def _remember(self, kept: Kept) -> None:
        # Without the decoded photo: a 12-megapixel one is 12 MB, and 256 of them were most of a
        # server's memory (benchmarks/api_soak.py: 105 MB of 340 for 562×762 headshots).
        kept = Kept(kept.id, replace(kept.prediction, gray=NO_PHOTO), kept.original, kept.record_ids)
        with self._lock:
            self._cache[kept.id] = kept
            self._cache.move_to_end(kept.id)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)

    def keep(self, kept: Kept) -> str | None:
        """Write KEPT to the shared store; returns None, or a warning when only this replica has it.
        The upload goes with it only when the team keeps uploads."""
        if not self.keep_uploads:
            kept = Kept(kept.id, kept.prediction, None, kept.record_ids)
        self._remember(kept)
        self._sweep_now_and_then()
        if kept.prediction.no_face:
            return None  # nothing to answer
        try:
            store = self._store()
            doc = _document(kept)
            if kept.original:
                store.put(f"{kept.id}/{doc['original']}", kept.original)
            store.put(f"{kept.id}/prediction.json", json.dumps(doc).encode())  # last: marks it complete
        except StoreError as exc:  # StoreUnavailable included
            return (f"Feedback on this prediction is possible on this server only for now: the store "
                    f"could not keep it ({exc})")
        return None

    def sweep(self, now: datetime | None = None) -> int:
        """Remove what predictions older than the feedback window left; returns how many objects."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.feedback_days)
        store = self._store()
        old = [o.key for o in store.list_objects() if o.modified < cutoff]
        for key in sorted(old, key=lambda k: not k.endswith("/prediction.json")):  # its marker first
            store.delete(key)
        with self._lock:
            for key in old:
                self._cache.pop(key.split("/", 1)[0], None)
        return len(old)

    def _sweep_now_and_then(self) -> None:
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + SWEEP_EVERY_S
        try:
            self.sweep()
        except FacexprError as exc:  # a later sweep tries again; answering never waits on it
            log.warning("predictions: could not sweep expired ones: %s", exc)

    def load(self, prediction_id: str) -> Kept:
        check_id(prediction_id)
        with self._lock:
            cached = self._cache.get(prediction_id)
        if cached is not None:
            return cached
        store = self._store()
        try:
            if not store.exists(f"{prediction_id}/prediction.json"):
                raise UnknownPrediction(f"No prediction {prediction_id} is kept for feedback "
                                        "(it was never made here, had no face, or has expired).")
            doc = json.loads(store.get(f"{prediction_id}/prediction.json"))
            original = store.get(f"{prediction_id}/{doc['original']}") if doc.get("original") else None
        except (ValueError, KeyError) as exc:
            raise StoreError(f"The kept prediction {prediction_id} is damaged: {exc}") from exc
        faces = [FaceResult(Box(*f["box"]), _crop(f["crop_png"]), np.asarray(f["probabilities"], np.float32))
                 for f in doc["faces"]]
        # kept before crops were aligned: those faces were cut by the Haar box
        prediction = Prediction(doc["image_sha256"], NO_PHOTO, faces, doc["mode"], doc["model_version"],
                                dict(doc.get("latency_ms") or {}), crop=doc.get("crop", LEGACY))
        kept = Kept(prediction_id, prediction, original, list(doc.get("record_ids") or []))
        self._remember(kept)
        return kept

    def _previous(self, store: ImageStore, prediction_id: str, face_index: int) -> SaveResult | None:
        key = f"{prediction_id}/answer-{face_index}.json"
        try:
            return SaveResult(**json.loads(store.get(key))) if store.exists(key) else None
        except (ValueError, TypeError):
            return None

    def answer(self, prediction_id: str, face_index: int, label: str,
               history: History | None) -> tuple[SaveResult, SaveResult | None, list[str]]:
        """Store face FACE_INDEX of the prediction under LABEL (replacing an earlier answer to the
        same face, so each face keeps one label). Returns (saved, replaced, warnings)."""
        kept = self.load(prediction_id)
        faces = len(kept.prediction.faces)
        if not faces:
            raise UnknownPrediction(f"Prediction {prediction_id} found no face: there is nothing to answer.")
        if not 0 <= face_index < faces:
            raise UnknownPrediction(f"Prediction {prediction_id} has {faces} face(s) (face_index 0 to "
                                    f"{faces - 1}); there is no face_index {face_index}.")
        warnings: list[str] = []
        store = self._store()
        try:
            previous = self._previous(store, prediction_id, face_index)
        except StoreError as exc:  # StoreUnavailable included
            previous = None
            warnings.append(f"An earlier answer to this face could not be looked up ({exc}).")
        saved = save_relabel(self.settings, kept.prediction, face_index, label, kept.original,
                             replaces=previous)
        try:
            store.put(f"{prediction_id}/answer-{face_index}.json", json.dumps(asdict(saved)).encode())
        except StoreError as exc:  # StoreUnavailable included
            warnings.append(f"The answer was saved, but a later change to it may not replace it ({exc}).")
        if history is not None and face_index < len(kept.record_ids):
            try:
                history.attach_feedback(kept.record_ids[face_index], saved.label, saved.confirmed,
                                        saved.object_key)
            except HistoryBuffered as exc:
                warnings.append(str(exc))
            except FacexprError as exc:
                warnings.append(f"The answer was saved, but the history could not note it: {exc}")
        elif history is not None:
            warnings.append("The answer was saved, but the prediction is not in the history.")
        return saved, (previous if previous and previous.key != saved.key else None), warnings

