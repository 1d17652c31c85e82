"""The one call: image bytes → Prediction (faces, boxes, probabilities, per-stage timings)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from facexpr.core.errors import FacexprError
from facexpr.core.labels import EXPRESSIONS
from facexpr.core.types import IMAGE_CROP, Box, FaceResult, Prediction
from facexpr.model.classifier import Classifier
from facexpr.photo.faces import find_crops
from facexpr.photo.geometry import CropGeometry
from facexpr.photo.imaging import ImageInput, decode_gray, load_gray, read_image_file


def _ms(a: float, b: float) -> float:
    return round((b - a) * 1000, 3)


@dataclass
class _Located:
    """An image decoded and searched for faces, waiting for the model."""

    sha256: str
    gray: np.ndarray
    mode: str
    boxes: list[Box]
    crops: list[np.ndarray]
    decode_ms: float
    detect_ms: float


def _locate(gray: np.ndarray, sha256: str, mode: str, geometry: CropGeometry, started: float, decoded: float
            ) -> _Located:
    used_mode, boxes, crops = find_crops(gray, mode, geometry)
    return _Located(sha256, gray, used_mode, boxes, crops, _ms(started, decoded),
                    _ms(decoded, time.perf_counter()))


def _finish(found: _Located, probs: np.ndarray, classify_ms: float, classifier: Classifier) -> Prediction:
    doubt = classifier.unsure_below
    return Prediction(
        image_sha256=found.sha256, gray=found.gray,
        faces=[FaceResult(b, c, p, unsure=bool(doubt is not None and float(p.max()) < doubt))
               for b, c, p in zip(found.boxes, found.crops, probs, strict=True)],
        mode=found.mode, model_version=classifier.version,
        latency_ms={"decode": found.decode_ms, "detect": found.detect_ms, "classify": classify_ms,
                    "total": round(found.decode_ms + found.detect_ms + classify_ms, 3)},
        crop=classifier.geometry.name if found.mode == "detect" else IMAGE_CROP)


def predict_image(data: bytes | str | os.PathLike, classifier: Classifier, mode: str = "auto",
                  image_sha256: str | None = None) -> Prediction:
    """Decode, find faces, classify. DATA is the image file's bytes (or its path). Raises
    ImageError for bad input; no face → empty `faces`. For PIL images and numpy arrays, see
    facexpr.Recognizer.

    IMAGE_SHA256 is the hash of DATA when the caller has it already (the page keys its cache by it).
    """
    if isinstance(data, (str, os.PathLike)):
        path = data
        try:
            data = read_image_file(path)
        except FacexprError as exc:
            raise type(exc)(f"{os.fspath(path)}: {exc}") from None
    started = time.perf_counter()
    gray = decode_gray(data)
    decoded = time.perf_counter()
    found = _locate(gray, image_sha256 or hashlib.sha256(data).hexdigest(), mode, classifier.geometry,
                    started, decoded)
    begun = time.perf_counter()
    probs = classifier.predict(np.stack(found.crops)) if found.crops else np.zeros((0, len(EXPRESSIONS)))
    return _finish(found, probs, _ms(begun, time.perf_counter()), classifier)


def predict_many(images: Iterable[ImageInput], classifier: Classifier, mode: str = "auto",
                 on_progress: Callable[[int], None] | None = None) -> list[Prediction | FacexprError]:
    """Like predict_image for each of IMAGES, with every face of every image classified in one
    batched model call (the batch path: several times the faces per second of one call per photo).

    An image that cannot be read gives its FacexprError in its place; the others are answered.
    Each answer's `classify` latency is its share (by faces) of the one batched call.
    ON_PROGRESS(n) is called after the n-th image is decoded and searched for faces.
    """
    located: list[_Located | FacexprError] = []
    for n, image in enumerate(images, start=1):
        started = time.perf_counter()
        try:
            gray, sha256, _ = load_gray(image)
            located.append(_locate(gray, sha256, mode, classifier.geometry, started, time.perf_counter()))
        except FacexprError as exc:
            located.append(exc)
        if on_progress:
            on_progress(n)
    found = [item for item in located if isinstance(item, _Located)]
    crops = [crop for item in found for crop in item.crops]
    begun = time.perf_counter()
    probs = classifier.predict(np.stack(crops)) if crops else np.zeros((0, len(EXPRESSIONS)), np.float32)
    per_face_ms = _ms(begun, time.perf_counter()) / max(1, len(crops))
    out: list[Prediction | FacexprError] = []
    offset = 0
    for item in located:
        if isinstance(item, FacexprError):
            out.append(item)
            continue
        n = len(item.crops)
        out.append(_finish(item, probs[offset:offset + n], round(per_face_ms * n, 3), classifier))
        offset += n
    return out
