"""The review queue: recent answers no person has answered yet, most useful first.

To show a face later, the Classify page keeps the least it must: each face's 48×48 crop and a
small gray copy of the photo (≤ PHOTO_SIDE px, as the model saw it; never the upload itself) under
a `review/` root beside the relabeled images (`s3://BUCKET/…/review/` or `FACEXPR_DATA_DIR/review`),
keyed by the photo's sha256: `<sha>/face-<i>.png`, `<sha>/photo.png`. Only faces kept that way
are queued. A face leaves the review store when someone labels it, and
anything older than REVIEW_DAYS (the queue's window) is swept away, so nothing stays there longer
than it is useful for review.

Order: faces on which the shadow candidate disagrees with the served model come first (the only
faces that tell the two apart; the candidate's answer is never shown), then faces on which the two
most recent model versions that answered them disagree, then the lowest confidence. Labelling
goes through the relabel path (store or outbox) and the history's feedback, as on the Classify
page; the upload itself was never kept, so `originals/` gets nothing from a review.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facexpr.core.config import Settings
from facexpr.core.errors import FacexprError
from facexpr.core.labels import EXPRESSIONS
from facexpr.photo.geometry import LEGACY
from facexpr.photo.imaging import encode_png
from facexpr.storage.relabel import SaveResult, save_crop
from facexpr.storage.store import open_store

log = logging.getLogger(__name__)

REVIEW = "review"
REVIEW_DAYS = 30
SCAN = 500  # unanswered records read per queue (newest first)
PHOTO_SIDE = 320  # the review copy of a photo: enough to see the face in context


def review_uri(settings: Settings) -> str:
    if settings.s3_bucket:
        parent = settings.s3_prefix.strip("/").rpartition("/")[0]
        return f"s3://{settings.s3_bucket}/{parent + '/' if parent else ''}{REVIEW}/"
    return str(Path(settings.data_dir) / REVIEW)


def review_photo(gray: np.ndarray) -> tuple[bytes, float]:
    """The review copy of a photo: its gray image shrunk to at most PHOTO_SIDE px a side (PNG),
    and the scale from the original's coordinates (the history's boxes) to the copy's."""
    image = Image.fromarray(np.asarray(gray, dtype=np.uint8))
    width = image.width
    image.thumbnail((PHOTO_SIDE, PHOTO_SIDE), Image.Resampling.BILINEAR)
    return encode_png(np.asarray(image)), image.width / max(width, 1)


def keep_for_review(settings: Settings, prediction: Any) -> str | None:
    """Keep PREDICTION's crops and a small gray photo for the review queue; returns None or a
    warning (never raises)."""
    if prediction.no_face:
        return None
    sha = prediction.image_sha256
    try:
        store = open_store(review_uri(settings))
        photo_key = f"{sha}/photo.png"
        if not store.exists(photo_key):
            png, scale = review_photo(prediction.gray)
            store.put(photo_key, png, {"scale": f"{scale:.6f}"})
        for i, face in enumerate(prediction.faces):
            store.put(f"{sha}/face-{i}.png", encode_png(face.crop), {"crop-geometry": prediction.crop})
    except FacexprError as exc:
        return f"This answer cannot be offered for review later: {exc}"
    return None


@dataclass(frozen=True)
class ReviewItem:
    record_id: str
    ts: datetime
    model_version: str
    image_sha256: str
    face_index: int
    box: list[int]
    expression: str
    confidence: float
    probabilities: np.ndarray  # (7,) FER2013 order
    other: tuple[str, str] | None  # (model version, its answer) when the previous version disagreed
    crop_key: str
    photo_key: str | None

    @property
    def disagreement(self) -> bool:
        return self.other is not None


def rank(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per face (its newest record, with `other` set where the previous version disagreed),
    shadow disagreements first, then version disagreements, then lowest confidence, then newest."""
    by_face: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in sorted(records, key=lambda r: r["ts"], reverse=True):
        by_face.setdefault((r["image_sha256"], int(r["face_index"])), []).append(r)
    out = []
    for face_records in by_face.values():
        newest = dict(face_records[0])
        previous = next((r for r in face_records if r["model_version"] != newest["model_version"]), None)
        newest["other"] = ((previous["model_version"], previous["expression"])
                           if previous and previous["expression"] != newest["expression"] else None)
        out.append(newest)
    def shadow_differs(r: dict[str, Any]) -> bool:
        return bool(r.get("shadow")) and r["shadow"]["expression"] != r["expression"]

    return sorted(out, key=lambda r: (not shadow_differs(r), r["other"] is None, r["confidence"],
                                      -r["ts"].timestamp()))


def review_queue(history: Any, settings: Settings, now: datetime | None = None, limit: int = 50,
                 skip: set[str] | frozenset[str] = frozenset()) -> list[ReviewItem]:
    """The queue (at most LIMIT faces) of faces kept for review that no one has answered yet."""
    since = (now or datetime.now(UTC)) - timedelta(days=REVIEW_DAYS)
    records = history.unanswered(since, SCAN)
    if not records:
        return []
    kept = set(open_store(review_uri(settings)).list_keys())
    photos = {k.split("/", 1)[0]: k for k in kept if "/photo." in k}
    items = []
    for r in rank(records):
        crop_key = f"{r['image_sha256']}/face-{r['face_index']}.png"
        if crop_key not in kept or r["id"] in skip:
            continue
        items.append(ReviewItem(
            record_id=r["id"], ts=r["ts"], model_version=r["model_version"], image_sha256=r["image_sha256"],
            face_index=int(r["face_index"]), box=list(r.get("box") or []), expression=r["expression"],
            confidence=float(r["confidence"]),
            probabilities=np.array([float(r["probabilities"][e]) for e in EXPRESSIONS], np.float32),
            other=r["other"], crop_key=crop_key, photo_key=photos.get(r["image_sha256"])))
        if len(items) >= limit:
            break
    return items


def load_crop(settings: Settings, item: ReviewItem) -> np.ndarray:
    data = open_store(review_uri(settings)).get(item.crop_key)
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


def load_photo(settings: Settings, item: ReviewItem) -> tuple[bytes, list[int]] | None:
    """The review copy of ITEM's photo and the face's box in its coordinates; None when gone."""
    if item.photo_key is None:
        return None
    try:
        store = open_store(review_uri(settings))
        data, scale = store.get(item.photo_key), float(store.metadata(item.photo_key).get("scale", 1))
    except (FacexprError, ValueError):
        return None
    return data, [round(v * scale) for v in item.box]


def label_item(settings: Settings, history: Any, item: ReviewItem, label: str, group: str | None = None,
               crop: np.ndarray | None = None, replaces: SaveResult | None = None
               ) -> tuple[SaveResult, str | None]:
    """Store ITEM's crop under LABEL (relabel path: store or outbox, with the photo as original), note
    the answer in the history, and drop the face from the review store. Returns (where it went, a
    warning or None). A store failure the outbox cannot take raises; then nothing has changed.

    To change an answer just given (a mistyped key), pass the CROP kept from it and the SaveResult it
    REPLACES: the crop moves to the new label (one face, one label) and the history's feedback follows."""
    geometry = LEGACY
    if crop is None:
        crop = load_crop(settings, item)
        try:  # how the crop was cut; a copy kept before that was recorded was cut by the Haar box
            geometry = open_store(review_uri(settings)).metadata(item.crop_key).get("crop-geometry") or LEGACY
        except FacexprError:
            pass
    elif replaces is not None:
        geometry = replaces.crop_geometry or LEGACY
    saved = save_crop(settings, crop, label, predicted=item.expression, confidence=item.confidence,
                      model_version=item.model_version, image_sha256=item.image_sha256,
                      face_index=item.face_index, group=group, crop_geometry=geometry, replaces=replaces)
    warning = None
    try:
        history.attach_feedback(item.record_id, saved.label, saved.confirmed, saved.object_key)
    except FacexprError as exc:  # HistoryBuffered included: the answer is kept and delivered later
        warning = str(exc)
    if replaces is None:
        try:
            store = open_store(review_uri(settings))
            store.delete(item.crop_key)
            if item.photo_key and not [k for k in store.list_keys(item.image_sha256 + "/") if "/face-" in k]:
                store.delete(item.photo_key)
        except FacexprError as exc:
            log.warning("review: could not drop %s: %s", item.crop_key, exc)  # answered: never queued again
    return saved, warning


def sweep(settings: Settings, now: datetime | None = None) -> int:
    """Remove review objects older than REVIEW_DAYS; returns how many."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=REVIEW_DAYS)
    store = open_store(review_uri(settings))
    old = [o.key for o in store.list_objects() if o.modified < cutoff]
    for key in old:
        store.delete(key)
    return len(old)
