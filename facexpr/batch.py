"""Batch classification: many files → one table row per face (or per unreadable file) + CSV."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from facexpr.errors import FacexprError
from facexpr.imaging import encode_png
from facexpr.labels import EXPRESSIONS
from facexpr.model import Classifier
from facexpr.predict import Prediction, predict_many

COLUMNS = ["file", "face", "expression", "confidence", "box", "error", *EXPRESSIONS]


@dataclass
class BatchItem:
    name: str
    prediction: Prediction | None = None
    error: str | None = None


def classify_files(files: Iterable[tuple[str, bytes]], classifier: Classifier,
                   on_progress: Callable[[int, str], None] | None = None) -> list[BatchItem]:
    """Classify each (name, bytes); a bad file is kept with its message and the rest go on.

    All faces go through the model in one batched call (facexpr.predict.predict_many); progress
    is reported as each file is decoded and searched for faces.
    """
    files = list(files)
    names = [name for name, _ in files]
    progress = (lambda n: on_progress(n, names[n - 1])) if on_progress else None
    answers = predict_many((data for _, data in files), classifier, on_progress=progress)
    return [BatchItem(name, error=str(answer)) if isinstance(answer, FacexprError)
            else BatchItem(name, prediction=answer) for name, answer in zip(names, answers, strict=True)]


def results_table(items: list[BatchItem]) -> pd.DataFrame:
    rows = []
    for item in items:
        base = {"file": item.name, "face": None, "expression": None, "confidence": None, "box": None,
                "error": item.error}
        if item.prediction is None:
            rows.append(base)
        elif item.prediction.no_face:
            rows.append({**base, "error": "no face found"})
        for i, face in enumerate(item.prediction.faces if item.prediction else []):
            rows.append({**base, "face": i + 1, "expression": face.expression,
                         "confidence": round(face.confidence, 4), "box": face.box.as_list(),
                         **{k: round(v, 4) for k, v in face.probability_map().items()}})
    return pd.DataFrame(rows, columns=COLUMNS)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Faces per expression (all seven, zeros included) for the summary chart."""
    counts = table["expression"].value_counts()
    return pd.DataFrame({"expression": list(EXPRESSIONS),
                         "faces": [int(counts.get(e, 0)) for e in EXPRESSIONS]})


def to_csv(table: pd.DataFrame) -> bytes:
    return table.to_csv(index=False).encode("utf-8")


def thumbnail_uri(crop: np.ndarray) -> str:
    """A face crop as a data: URI, for the table's image column."""
    return "data:image/png;base64," + base64.b64encode(encode_png(crop)).decode("ascii")


def thumbnails(items: list[BatchItem]) -> list[str | None]:
    """One entry per table row, in `results_table` order (None for rows without a face)."""
    out: list[str | None] = []
    for item in items:
        if item.prediction is None or item.prediction.no_face:
            out.append(None)
        else:
            out.extend(thumbnail_uri(face.crop) for face in item.prediction.faces)
    return out
