"""Batch classification: many files → one table row per face (or per unreadable file) + CSV."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from facexpr.core.errors import FacexprError
from facexpr.core.labels import EXPRESSIONS
from facexpr.core.types import Prediction
from facexpr.model.classifier import Classifier
from facexpr.model.predict import predict_many
from facexpr.photo.imaging import check_upload_name, encode_png

COLUMNS = ["file", "face", "expression", "confidence", "box", "error", "unsure", "runner_up", *EXPRESSIONS,
           "model_version", "classified_at"]
NO_FACE = "no face found"


@dataclass
class BatchItem:
    name: str
    prediction: Prediction | None = None
    error: str | None = None
    classified_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def note(self) -> str | None:
        """Why this file has no answer (unreadable, or no face in it); None when it has faces."""
        if self.error:
            return self.error
        return NO_FACE if self.prediction is not None and self.prediction.no_face else None


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def classify_files(files: Iterable[tuple[str, bytes]], classifier: Classifier,
                   on_progress: Callable[[int, str], None] | None = None) -> list[BatchItem]:
    """Classify each (name, bytes); a bad file is kept with its message and the rest go on.

    All faces go through the model in one batched call (facexpr.model.predict.predict_many); progress
    is reported as each file is decoded and searched for faces. A name that is not a photo's
    (facexpr.photo.imaging.check_upload_name) is refused without reading the file.
    """
    files = list(files)
    refused: dict[int, str] = {}
    for i, (name, _) in enumerate(files):
        try:
            check_upload_name(name)
        except FacexprError as exc:
            refused[i] = str(exc)
    readable = [i for i in range(len(files)) if i not in refused]
    progress = (lambda n: on_progress(n, files[readable[n - 1]][0])) if on_progress else None
    answers = dict(zip(readable, predict_many((files[i][1] for i in readable), classifier,
                                              on_progress=progress), strict=True))
    items = []
    for i, (name, _) in enumerate(files):
        answer = answers.get(i)
        if i in refused or isinstance(answer, FacexprError):
            items.append(BatchItem(name, error=refused.get(i) or str(answer)))
        else:
            items.append(BatchItem(name, prediction=answer))
    return items


def results_table(items: list[BatchItem]) -> pd.DataFrame:
    """One row per face (numbered from 1, left to right), or one per file without an answer, whose
    `error` says why. Every row names the model that answered and when (UTC)."""
    rows = []
    for item in items:
        base = {"file": item.name, "face": None, "expression": None, "confidence": None, "box": None,
                "error": item.note, "unsure": None, "runner_up": None,
                "classified_at": item.classified_at.isoformat(timespec="seconds"),
                "model_version": item.prediction.model_version if item.prediction else None}
        if item.note:
            rows.append(base)
        for i, face in enumerate(item.prediction.faces if item.prediction else []):
            rows.append({**base, "face": i + 1, "expression": face.expression,
                         "confidence": round(face.confidence, 4), "box": face.box.as_list(),
                         "unsure": face.unsure, "runner_up": face.runner_up,
                         **{k: round(v, 4) for k, v in face.probability_map().items()}})
    # Int64: face numbers stay whole (1, not 1.0) beside the rows that have none.
    return pd.DataFrame(rows, columns=COLUMNS).astype({"face": "Int64"})


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
        if item.note:
            out.append(None)
        out.extend(thumbnail_uri(face.crop) for face in (item.prediction.faces if item.prediction else []))
    return out


@dataclass(frozen=True)
class FaceRow:
    """One face of a batch, as the page offers it to be confirmed or corrected."""

    item: int  # index into the batch's items (and its files)
    face_index: int
    file: str
    expression: str
    prediction: Prediction


def face_rows(items: list[BatchItem]) -> list[FaceRow]:
    """Every face of the batch in table order."""
    return [FaceRow(n, i, item.name, face.expression, item.prediction)
            for n, item in enumerate(items) if item.prediction is not None
            for i, face in enumerate(item.prediction.faces)]


def faces_table(items: list[BatchItem], answers: dict[tuple[str, str, int], str] | None = None
                ) -> pd.DataFrame:
    """What the page's table shows: one row per face, no empty cells (files without an answer are
    listed above it, with the whole reason), and the label a person gave where one was saved
    (ANSWERS: (image sha256, mode, face index) → label)."""
    table = results_table(items).assign(crop=thumbnails(items))
    table = table[table["face"].notna()].copy()
    # An unsure answer reads as the choice it is ("neutral or sad?"), as on the Classify page.
    unsure = table["unsure"].astype(bool)
    table.loc[unsure, "expression"] = table["expression"][unsure] + " or " + table["runner_up"][unsure] + "?"
    answers = answers or {}
    table["your answer"] = [answers.get((r.prediction.image_sha256, r.prediction.mode, r.face_index), "")
                            for r in face_rows(items)]
    return table[["crop", "file", "face", "expression", "confidence", "your answer"]]
