"""History documents: their fields, validation, and the bins the aggregate queries count in.

One document per face (`docs/design.md` lists the fields): `ts` UTC, `model_version`,
`image_sha256`, `face_index`, `box`, `expression`, `confidence`, `probabilities`, `latency_ms`,
`source`, and `feedback` {label, confirmed, ts, object_key} once a person answers. An image in
which no face was found gets one *no-face document*: `no_face: true` with `ts`, `model_version`,
`image_sha256`, `latency_ms` and `source` only (no face fields, never feedback); face queries and
`count` leave it out, `detection_counts` counts it (the detector's failure rate). Both backends
validate through `check_document` and bin with the formulas here (also written in SQL and in the
Mongo pipeline), so they answer the same.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from facexpr.core.errors import HistoryError
from facexpr.core.labels import EXPRESSIONS, parse_label
from facexpr.core.times import utc

if TYPE_CHECKING:
    from facexpr.core.types import Prediction

SOURCES: tuple[str, ...] = ("upload", "camera", "batch", "cli", "api", "import")
STAGES: tuple[str, ...] = ("decode", "detect", "classify", "total")
CONFIDENCE_BINS = 20  # histogram bins of width 0.05; bin 10 starts at the low-confidence line
LOW_CONFIDENCE = 0.5
LATENCY_BINS_PER_OCTAVE = 32  # bin centres 2**(1/32) apart: a percentile is within ±1.1 %
LATENCY_FLOOR_MS = 0.001  # a stage reported as 0 ms is counted in the lowest bin
DAY_S = 86400

CubeRow = tuple[date, str, str, int, int, float]  # day, model, expression, bin, count, sum of confidence
LatencyRow = tuple[str, int, int]  # stage, bin, count
FeedbackRow = tuple[date, str, str, str, bool, int]  # day, model, predicted, label, confirmed, count
RelabelRow = tuple[str, bool, int]  # label, confirmed, count
DetectionRow = tuple[date, str, int, int]  # day, source, images, images with no face found


def documents_for(prediction: Prediction, source: str, ts: datetime | None = None) -> list[dict[str, Any]]:
    """The history documents of PREDICTION: one per face, or one no-face document when none was found."""
    when = utc(ts) or datetime.now(UTC)
    latency = {stage: float(prediction.latency_ms.get(stage, 0.0)) for stage in STAGES}
    if not prediction.faces:
        return [{"ts": when, "model_version": prediction.model_version,
                 "image_sha256": prediction.image_sha256, "latency_ms": latency, "source": source,
                 "no_face": True}]
    return [{
        "ts": when,
        "model_version": prediction.model_version,
        "image_sha256": prediction.image_sha256,
        "face_index": i,
        "box": [int(v) for v in face.box.as_list()],
        "expression": face.expression,
        "confidence": round(face.confidence, 6),
        "probabilities": face.probability_map(),
        "latency_ms": dict(latency),
        "source": source,
    } for i, face in enumerate(prediction.faces)]


def check_document(doc: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise one document (times to UTC, numbers to float) before it is stored."""
    try:
        source = doc["source"]
        if source not in SOURCES:
            raise HistoryError(f"Unknown source {source!r}: use one of {', '.join(SOURCES)}.")
        if doc.get("no_face"):
            if doc.get("feedback"):
                raise HistoryError("A no-face document cannot carry a person's answer.")
            return {"ts": utc(doc["ts"]), "model_version": str(doc["model_version"]),
                    "image_sha256": str(doc["image_sha256"]),
                    "latency_ms": {stage: float(doc["latency_ms"][stage]) for stage in STAGES},
                    "source": source, "no_face": True}
        clean = {
            "ts": utc(doc["ts"]),
            "model_version": str(doc["model_version"]),
            "image_sha256": str(doc["image_sha256"]),
            "face_index": int(doc["face_index"]),
            "box": [int(v) for v in doc["box"]],
            "expression": parse_label(doc["expression"]),
            "confidence": float(doc["confidence"]),
            "probabilities": {name: float(doc["probabilities"][name]) for name in EXPRESSIONS},
            "latency_ms": {stage: float(doc["latency_ms"][stage]) for stage in STAGES},
            "source": source,
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise HistoryError(f"A history document is missing or has a bad field: {exc}") from exc
    if doc.get("feedback"):
        clean["feedback"] = feedback_of(**doc["feedback"])
    return clean


def feedback_of(label: str, confirmed: bool, ts: datetime | str | None = None,
              object_key: str | None = None) -> dict[str, Any]:
    """The `feedback` sub-document of a person's answer (the label checked, the time in UTC)."""
    return {"label": parse_label(label), "confirmed": bool(confirmed),
            "ts": utc(ts) or datetime.now(UTC), "object_key": object_key}


def bounds(start: datetime | None, end: datetime | None) -> tuple[float, float]:
    """A window as epoch seconds; an open side is ±infinity."""
    lo = utc(start).timestamp() if start is not None else -math.inf
    hi = utc(end).timestamp() if end is not None else math.inf
    return lo, hi


def latency_bin(ms: float) -> int:
    """The log-latency bin of MS (the same formula runs in SQL and in the Mongo pipeline)."""
    return math.floor(math.log2(max(ms, LATENCY_FLOOR_MS)) * LATENCY_BINS_PER_OCTAVE + 0.5)


def latency_bin_value(bin_: int) -> float:
    """The latency (ms) a bin stands for: its centre."""
    return 2.0 ** (bin_ / LATENCY_BINS_PER_OCTAVE)


def confidence_bin(confidence: float) -> int:
    return min(CONFIDENCE_BINS - 1, int(confidence * CONFIDENCE_BINS))
