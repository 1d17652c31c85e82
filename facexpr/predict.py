"""The one call: image bytes → Prediction (faces, boxes, probabilities, per-stage timings)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from facexpr.faces import Box, crop_face, detect_faces, is_ready_crop, resize_crop, whole_image_crop
from facexpr.imaging import decode_gray
from facexpr.labels import EXPRESSIONS
from facexpr.model import Classifier

FacesMode = Literal["auto", "detect", "crop", "whole"]
FACES_MODES: tuple[str, ...] = ("auto", "detect", "crop", "whole")


@dataclass
class FaceResult:
    box: Box
    crop: np.ndarray  # the 48×48 uint8 the model saw
    probabilities: np.ndarray  # (7,) in FER2013 order

    @property
    def expression(self) -> str:
        return EXPRESSIONS[int(np.argmax(self.probabilities))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.probabilities))

    def probability_map(self) -> dict[str, float]:
        return {name: round(float(p), 6) for name, p in zip(EXPRESSIONS, self.probabilities, strict=True)}

    def to_dict(self) -> dict[str, Any]:
        return {"box": self.box.as_list(), "expression": self.expression,
                "confidence": round(self.confidence, 6), "probabilities": self.probability_map()}


@dataclass
class Prediction:
    image_sha256: str
    gray: np.ndarray  # the whole image as the model's pipeline saw it (8-bit gray)
    faces: list[FaceResult]
    mode: str  # how faces were found: "detect", "crop" (ready crop) or "whole"
    model_version: str
    latency_ms: dict[str, float] = field(default_factory=dict)

    @property
    def no_face(self) -> bool:
        return not self.faces

    def to_dict(self) -> dict[str, Any]:
        return {"faces": [f.to_dict() for f in self.faces], "mode": self.mode,
                "model_version": self.model_version, "latency_ms": self.latency_ms}


def find_crops(gray: np.ndarray, mode: str = "auto") -> tuple[str, list[Box], list[np.ndarray]]:
    """Where the faces are and their 48×48 crops, by MODE:

    auto   — ready crop if ≤ 64 px on both sides, else detect;
    detect — detect faces (none → empty lists);
    crop   — the whole image is one face crop;
    whole  — the centred square of the image (the "classify anyway" choice when no face is found).
    """
    if mode not in FACES_MODES:
        raise ValueError(f"faces mode must be one of {FACES_MODES}, not {mode!r}")
    if mode == "auto":
        mode = "crop" if is_ready_crop(gray) else "detect"
    if mode == "crop":
        return mode, [Box(0, 0, gray.shape[1], gray.shape[0])], [resize_crop(gray)]
    if mode == "whole":
        box, crop = whole_image_crop(gray)
        return mode, [box], [crop]
    boxes = detect_faces(gray)
    return mode, boxes, [crop_face(gray, b) for b in boxes]


def predict_image(data: bytes, classifier: Classifier, mode: str = "auto", image_sha256: str | None = None
                  ) -> Prediction:
    """Decode, find faces, classify. Raises ImageError for bad input; no face → empty `faces`.

    IMAGE_SHA256 is the hash of DATA when the caller has it already (the page keys its cache by it).
    """
    started = time.perf_counter()
    gray = decode_gray(data)
    decoded = time.perf_counter()
    used_mode, boxes, crops = find_crops(gray, mode)
    detected = time.perf_counter()
    probs = classifier.predict(np.stack(crops)) if crops else np.zeros((0, len(EXPRESSIONS)))
    done = time.perf_counter()
    ms = lambda a, b: round((b - a) * 1000, 3)  # noqa: E731
    return Prediction(
        image_sha256=image_sha256 or hashlib.sha256(data).hexdigest(),
        gray=gray,
        faces=[FaceResult(b, c, p) for b, c, p in zip(boxes, crops, probs, strict=True)],
        mode=used_mode,
        model_version=classifier.version,
        latency_ms={"decode": ms(started, decoded), "detect": ms(decoded, detected),
                    "classify": ms(detected, done), "total": ms(started, done)},
    )
