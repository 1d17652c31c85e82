"""The one call from Python: `facexpr.Recognizer().classify(image)`.

>>> import facexpr
>>> recognizer = facexpr.Recognizer()          # loads the shipped model once (FACEXPR_MODEL wins)
>>> faces = recognizer.classify("tests/fixtures/astronaut.jpg")
>>> [(face.expression, face.box) for face in faces]
[('happy', (176, 75, 98, 98))]
>>> round(sum(faces[0].probabilities.values()), 3)
1.0

`classify` takes a file path (str or Path), the file's bytes, a PIL image, or a numpy array:
H×W is gray; H×W×3 is **RGB** and H×W×4 RGBA. OpenCV's `cv2.imread` gives BGR: pass
`img[..., ::-1]`. Anything it cannot read raises `facexpr.FacexprError` with a plain message.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facexpr.core.errors import FacexprError
from facexpr.core.labels import EXPRESSIONS
from facexpr.core.types import Prediction
from facexpr.model.predict import predict_many
from facexpr.photo.faces import FACES_MODES
from facexpr.photo.imaging import ImageInput


@dataclass(frozen=True)
class Face:
    """One face: where it is, what it shows, and how sure the model is."""

    box: tuple[int, int, int, int]  # x, y, width, height in the image's pixels
    expression: str  # one of facexpr.EXPRESSIONS
    confidence: float  # the probability of `expression`
    probabilities: dict[str, float]  # all seven, FER2013 order
    crop: np.ndarray = field(repr=False, compare=False)  # the 48×48 gray pixels the model saw
    unsure: bool = False  # below the model card's threshold: show `runner_up` beside the answer
    runner_up: str = ""  # the second most likely expression

    def to_dict(self) -> dict[str, Any]:
        return {"box": list(self.box), "expression": self.expression, "confidence": self.confidence,
                "unsure": self.unsure, "runner_up": self.runner_up, "probabilities": dict(self.probabilities)}


def faces_of(prediction: Prediction) -> list[Face]:
    return [Face(box=tuple(face.box.as_list()), expression=face.expression,  # type: ignore[arg-type]
                 confidence=round(face.confidence, 6), probabilities=face.probability_map(), crop=face.crop,
                 unsure=face.unsure, runner_up=face.runner_up)
            for face in prediction.faces]


class Recognizer:
    """A loaded model, ready to classify many images (load it once, keep it).

    MODEL: a `.keras` file (its `.json` card and, served without TensorFlow, its `.tflite` beside
    it); default FACEXPR_MODEL, else the shipped model. FACES: "auto" (images ≤ 64 px are taken as
    ready face crops, larger ones are searched for faces), "detect" (always search) or "crop" (the
    whole image is one face).
    """

    def __init__(self, model: str | os.PathLike | None = None, *, faces: str = "auto") -> None:
        from facexpr.core.config import load_settings
        from facexpr.model.classifier import load_classifier

        if faces not in FACES_MODES:
            raise FacexprError(f"faces must be one of {', '.join(FACES_MODES)}, not {faces!r}.")
        self.faces = faces
        self.classifier = load_classifier(model or load_settings().model)

    @property
    def model_version(self) -> str:
        return self.classifier.version

    @property
    def expressions(self) -> tuple[str, ...]:
        return EXPRESSIONS

    def predict(self, image: ImageInput) -> Prediction:
        """The full answer (faces, the gray image, per-stage latency) as the app and the API use it."""
        (answer,) = predict_many([image], self.classifier, self.faces)
        if isinstance(answer, FacexprError):
            raise answer
        return answer

    def classify(self, image: ImageInput) -> list[Face]:
        """The faces in IMAGE, left to right ([] when there is none)."""
        return faces_of(self.predict(image))

    def classify_many(self, images: Iterable[ImageInput]) -> list[list[Face]]:
        """The faces of each image, in order, with all faces classified in one batched model call.

        Raises FacexprError naming the first image that cannot be read (counting from 1).
        """
        answers = predict_many(list(images), self.classifier, self.faces)
        for n, answer in enumerate(answers, start=1):
            if isinstance(answer, FacexprError):
                raise type(answer)(f"Image {n}: {answer}")
        return [faces_of(answer) for answer in answers if isinstance(answer, Prediction)]

    def __repr__(self) -> str:
        return f"Recognizer(model={self.model_version!r}, faces={self.faces!r})"
