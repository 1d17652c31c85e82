"""The value types every layer passes around: where a face is, its landmarks, and an answer.

They live here, at the bottom, so storage can record an answer without importing the code that
makes one (facexpr.model.predict) and the photo path can return faces without the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facexpr.core.labels import CROP_SIZE, EXPRESSIONS

Point = tuple[float, float]
IMAGE_CROP = "image"  # a crop that is the image itself, cut by no geometry


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


@dataclass(frozen=True)
class Landmarks:
    """A face's eye centres and mouth centre in the photo's pixels (counted from the edges).
    `eye_left` is the eye on the image's left (the person's right eye)."""

    eye_left: Point
    eye_right: Point
    mouth: Point

    def shifted(self, dx: float, dy: float) -> Landmarks:
        return Landmarks(*((x + dx, y + dy) for x, y in (self.eye_left, self.eye_right, self.mouth)))

    def scaled(self, fx: float, fy: float | None = None) -> Landmarks:
        """In the coordinates of a copy FX (across) and FY (down; default FX) times as large."""
        fy = fx if fy is None else fy
        return Landmarks(*((x * fx, y * fy) for x, y in (self.eye_left, self.eye_right, self.mouth)))

    def eye_distance(self) -> float:
        return float(np.hypot(self.eye_right[0] - self.eye_left[0], self.eye_right[1] - self.eye_left[1]))


@dataclass
class FaceResult:
    box: Box
    crop: np.ndarray  # the 48×48 uint8 the model saw
    probabilities: np.ndarray  # (7,) in FER2013 order
    # The confidence is below the model card's `unsure.below`: on the development photos such
    # answers were wrong more often than right, so the runner-up is shown beside the answer.
    unsure: bool = False

    @property
    def expression(self) -> str:
        return EXPRESSIONS[int(np.argmax(self.probabilities))]

    @property
    def runner_up(self) -> str:
        """The second most likely expression."""
        return EXPRESSIONS[int(np.argsort(self.probabilities)[-2])]

    def headline(self) -> str:
        """The answer in words: "Happy", or "Neutral or sad?" when the model is unsure."""
        if self.unsure:
            return f"{self.expression.capitalize()} or {self.runner_up}?"
        return self.expression.capitalize()

    @property
    def confidence(self) -> float:
        return float(np.max(self.probabilities))

    @property
    def too_small(self) -> bool:
        """The face is smaller than the model's 48×48 input: its crop was enlarged, so the answer
        rests on detail that is not in the photo."""
        return self.box.w < CROP_SIZE or self.box.h < CROP_SIZE

    def probability_map(self) -> dict[str, float]:
        return {name: round(float(p), 6) for name, p in zip(EXPRESSIONS, self.probabilities, strict=True)}

    def to_dict(self) -> dict[str, Any]:
        return {"box": self.box.as_list(), "expression": self.expression,
                "confidence": round(self.confidence, 6), "unsure": self.unsure, "runner_up": self.runner_up,
                "probabilities": self.probability_map()}


@dataclass
class Prediction:
    image_sha256: str
    gray: np.ndarray  # the whole image as the model's pipeline saw it (8-bit gray)
    faces: list[FaceResult]
    mode: str  # how faces were found: "detect", "crop" (ready crop) or "whole"
    model_version: str
    latency_ms: dict[str, float] = field(default_factory=dict)
    # How each face became its crop: the crop geometry's name ("fer-template", "haar-box") for
    # detected faces, IMAGE_CROP when the image itself was the face (a ready crop, the whole image).
    crop: str = ""

    @property
    def no_face(self) -> bool:
        return not self.faces

    def to_dict(self) -> dict[str, Any]:
        return {"faces": [f.to_dict() for f in self.faces], "mode": self.mode,
                "model_version": self.model_version, "latency_ms": self.latency_ms}
