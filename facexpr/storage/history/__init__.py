"""Prediction history: one document per face, in MongoDB (pymongo) or an embedded SQLite file.

Both backends keep the documents of `documents` and answer the same few aggregate queries, so
`health` never loads documents into pandas:

- `confidence_cube`: counts and confidence sums per (UTC day, model, expression, confidence bin);
- `latency_bins`: counts per (stage, log-latency bin), from which percentiles are read;
- `feedback_counts`: answers per (day, model, predicted, human label, confirmed);
- `detection_counts`: images per (day, source) and how many of them had no face found;
- `relabel_counts`: answers given since a time (e.g. since the served model was trained).

All but `relabel_counts` take an optional `source` (upload, camera, …) to count that one only.

`open_history` picks the backend; the `*_safely` calls are what the pages and the CLI use once
an answer is on screen: they turn every failure into a warning to show.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from facexpr.core.config import Settings
from facexpr.core.errors import FacexprError, HistoryBuffered, HistoryError, HistoryUnavailable
from facexpr.core.times import utc
from facexpr.storage.history.documents import (
    CONFIDENCE_BINS,
    DAY_S,
    LATENCY_BINS_PER_OCTAVE,
    LATENCY_FLOOR_MS,
    LOW_CONFIDENCE,
    SOURCES,
    STAGES,
    CubeRow,
    DetectionRow,
    FeedbackRow,
    LatencyRow,
    RelabelRow,
    confidence_bin,
    documents_for,
    latency_bin,
    latency_bin_value,
)
from facexpr.storage.history.mongo import (
    BUFFER_FILE,
    MONGO_COLLECTION,
    RETRY_AFTER_S,
    MongoHistory,
    WriteBuffer,
)
from facexpr.storage.history.sqlite import EMBEDDED_FILE, SqliteHistory

if TYPE_CHECKING:
    from facexpr.core.types import Prediction

__all__ = [
    "BUFFER_FILE", "CONFIDENCE_BINS", "DAY_S", "EMBEDDED_FILE", "LATENCY_BINS_PER_OCTAVE", "LATENCY_FLOOR_MS",
    "MONGO_COLLECTION", "RETRY_AFTER_S", "LOW_CONFIDENCE", "SOURCES", "STAGES",
    "CubeRow", "DetectionRow", "FeedbackRow", "History", "HistoryBuffered", "HistoryError", "HistoryOpener",
    "HistoryUnavailable", "LatencyRow", "MongoHistory", "RelabelRow", "SqliteHistory",
    "WriteBuffer", "confidence_bin", "documents_for", "feedback_safely", "latency_bin", "latency_bin_value",
    "open_history", "record_batch_safely", "record_safely", "utc",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


class History(Protocol):
    """What the pages, the CLI and `health` use; `open_history` picks the backend."""

    backend: str  # "mongodb" or "embedded"
    location: str  # where the documents live, for messages (never contains a password)

    def record(self, prediction: Prediction, source: str, ts: datetime | None = None) -> list[str]:
        """Store one document per face of PREDICTION; returns their ids, in face order."""

    def insert_documents(self, docs: Iterable[dict[str, Any]]) -> list[str]:
        """Store ready-made documents (the fields docs/design.md lists); bulk loads and tests use it."""

    def attach_feedback(self, record_id: str, label: str, confirmed: bool, object_key: str | None,
                        ts: datetime | None = None) -> None:
        """Set the record's `feedback` {label, confirmed, ts, object_key}: the answer with the latest
        `ts` wins, whatever order answers arrive in (an older one arriving late changes nothing)."""

    def attach_shadow(self, record_id: str, model_version: str, expression: str, confidence: float) -> None:
        """Note the shadow candidate's answer on the record as `shadow` {model_version, expression,
        confidence}: evidence for the candidate, never shown as the answer, never a record itself."""

    def shadow_answers(self, model_version: str, served: str | None = None
                       ) -> list[tuple[str, str, str | None]]:
        """(served answer, MODEL_VERSION's shadow answer, the label a person gave or None) per record,
        only those SERVED answered when given (the tally compares the candidate with one model)."""

    def get(self, record_id: str) -> dict[str, Any] | None:
        """The document with its `id` (and its `shadow` answer, if any), or None."""

    def count(self, start: datetime | None = None, end: datetime | None = None) -> int:
        """Faces recorded in [START, END) (no-face documents are not counted)."""

    def pending(self) -> int:
        """Writes kept locally, waiting for the database (always 0 for the embedded store)."""

    def flush(self) -> int:
        """Deliver what waits locally; returns how many writes went through."""

    def confidence_cube(self, start: datetime | None, end: datetime | None,
                        source: str | None = None) -> list[CubeRow]: ...

    def latency_bins(self, start: datetime | None, end: datetime | None,
                     source: str | None = None) -> list[LatencyRow]: ...

    def feedback_counts(self, start: datetime | None, end: datetime | None,
                        source: str | None = None) -> list[FeedbackRow]: ...

    def detection_counts(self, start: datetime | None, end: datetime | None,
                         source: str | None = None) -> list[DetectionRow]: ...

    def relabel_counts(self, since: datetime | None) -> list[RelabelRow]: ...

    def unanswered(self, since: datetime | None, limit: int = 200) -> list[dict[str, Any]]:
        """Records no person has answered (nor any other record of the same face), newest first, each
        with its `shadow` answer where a candidate gave one."""

    def close(self) -> None: ...


HistoryOpener = Callable[[], History]  # how to get the history, e.g. ui.get_history; opening may fail too


def open_history(settings: Settings) -> History:
    """MongoDB when FACEXPR_MONGODB_URI is set, else the embedded file under FACEXPR_DATA_DIR.

    Never waits on the network: a MongoDB history connects on first use.
    """
    if settings.mongodb_uri:
        return MongoHistory(settings.mongodb_uri, settings.mongodb_db, settings.data_dir)
    return SqliteHistory(Path(settings.data_dir) / EMBEDDED_FILE)


# ---------------------------------------------------------------- once an answer is on screen

def _attempt(work: Callable[[], T], failure: str) -> tuple[T | list[str] | None, str | None]:
    """Run WORK; returns (its result, None), or (what is known, a warning) when it failed.

    A write kept locally (`HistoryBuffered`) yields the ids it will have. Never raises: the answer
    is already on screen, and the history must never break the page.
    """
    try:
        return work(), None
    except HistoryBuffered as exc:
        return exc.record_ids, str(exc)
    except FacexprError as exc:
        return None, f"{failure}: {exc}"
    except Exception as exc:
        log.exception("history: %s", failure)
        return None, f"{failure}: {exc}"


def record_safely(history: HistoryOpener | None, prediction: Prediction, source: str
                  ) -> tuple[list[str] | None, str | None]:
    """Record PREDICTION (one document per face, or its no-face document). Returns (record ids,
    warning): ids are None when nothing was recorded, the warning None when all went well. Never
    raises."""
    if history is None:
        return None, None
    return _attempt(lambda: history().record(prediction, source),
                    "This prediction could not be added to the history")


def record_batch_safely(history: HistoryOpener | None, predictions: Sequence[Prediction], source: str
                        ) -> tuple[list[list[str]] | None, str | None]:
    """Record many predictions in one write (one transaction, one round trip). Returns (each
    prediction's face record ids, in face order — none for a photo without a face, though its
    no-face document is recorded; None when nothing was recorded, warning or None); never raises."""
    per_prediction = [documents_for(p, source) for p in predictions]
    docs = [doc for group in per_prediction for doc in group]
    if history is None or not docs:
        return None, None
    ids, warning = _attempt(lambda: history().insert_documents(docs),
                            "These answers could not be added to the history")
    if not ids or len(ids) != len(docs):
        return None, warning
    split, start = [], 0
    for prediction, group in zip(predictions, per_prediction, strict=True):
        split.append(list(ids[start:start + len(group)]) if prediction.faces else [])
        start += len(group)
    return split, warning


def feedback_safely(history: HistoryOpener | None, record_id: str, label: str, confirmed: bool,
                    object_key: str | None) -> str | None:
    """Attach a person's answer to the record RECORD_ID; returns None or a warning, never raises."""
    if history is None:
        return None
    return _attempt(lambda: history().attach_feedback(record_id, label, confirmed, object_key),
                    "The answer was saved, but the history could not note it")[1]
