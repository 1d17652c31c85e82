"""History backends and a small hand-checked fixture, shared by the history, health and page tests
(the `history` fixture in tests/conftest.py runs a test on each backend).

Every backend test runs on the embedded store, on MongoDB through mongomock, on a real
MongoDB-wire server (secantusd-py on loopback, started once per session: tests/mongo_wire.py),
and on a real `mongod` when FACEXPR_TEST_MONGODB_URI is set. On a server each test gets its own
database, dropped after.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from facexpr.core.labels import EXPRESSIONS
from facexpr.storage.history import EMBEDDED_FILE, MongoHistory, SqliteHistory

REAL_MONGO = os.environ.get("FACEXPR_TEST_MONGODB_URI")
BACKENDS = ["embedded", "mongomock", "mongo-wire",
            pytest.param("mongodb", marks=pytest.mark.skipif(not REAL_MONGO,
                                                             reason="FACEXPR_TEST_MONGODB_URI is not set"))]

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def make_history(kind: str, data_dir, uri: str | None = None) -> Any:
    """A history of KIND; "mongo-wire" needs the server's URI."""
    if kind == "embedded":
        return SqliteHistory(data_dir / EMBEDDED_FILE)
    if kind == "mongomock":
        import mongomock

        return MongoHistory(client=mongomock.MongoClient(tz_aware=True), data_dir=data_dir)
    return MongoHistory(uri or REAL_MONGO, f"facexpr_test_{uuid.uuid4().hex[:12]}", data_dir)


def doc(ts: datetime, model: str, expression: str, confidence: float, latency: tuple[float, ...],
        feedback: tuple[str, bool] | None = None, source: str = "upload", face_index: int = 0
        ) -> dict[str, Any]:
    """A history document; the other classes share what CONFIDENCE leaves."""
    rest = (1 - confidence) / (len(EXPRESSIONS) - 1)
    out = {
        "ts": ts, "model_version": model,
        "image_sha256": f"{hash((ts, model, expression)) & (2**64 - 1):064x}",
        "face_index": face_index, "box": [10, 20, 30, 30], "expression": expression, "confidence": confidence,
        "probabilities": {e: confidence if e == expression else rest for e in EXPRESSIONS},
        "latency_ms": dict(zip(("decode", "detect", "classify", "total"), latency, strict=True)),
        "source": source,
    }
    if feedback:
        out["feedback"] = {"label": feedback[0], "confirmed": feedback[1], "ts": ts + timedelta(minutes=1),
                           "object_key": f"relabeled/{feedback[0]}/{expression}.png"}
    return out


def no_face_doc(ts: datetime, model: str = "m1", source: str = "upload") -> dict[str, Any]:
    """The document of an image in which no face was found."""
    sha = f"{hash((ts, model, source)) & (2**64 - 1):064x}"
    return {"ts": ts, "model_version": model, "image_sha256": sha, "source": source, "no_face": True,
            "latency_ms": {"decode": 1.0, "detect": 12.0, "classify": 0.0, "total": 13.0}}


def day(d: int, hour: float) -> datetime:
    """March D, 2026 at HOUR (UTC)."""
    return datetime(2026, 3, d, tzinfo=UTC) + timedelta(hours=hour)


# Six predictions over three days in the window that starts March 8, 06:00, and one old one.
FIXTURE = [
    doc(day(8, 9), "m1", "happy", 0.90, (1, 10, 4, 15), ("happy", True)),
    doc(day(8, 10), "m1", "sad", 0.40, (2, 20, 4, 26), ("angry", False)),
    doc(day(8, 23.5), "m1", "happy", 0.70, (3, 30, 5, 38)),
    doc(day(9, 1), "m2", "neutral", 0.30, (4, 40, 5, 49), ("neutral", True)),
    doc(day(9, 12), "m2", "happy", 0.95, (5, 50, 6, 61), ("happy", True)),
    doc(day(10, 11), "m2", "surprise", 0.55, (6, 60, 7, 73), ("fear", False)),
    doc(datetime(2026, 1, 1, 8, tzinfo=UTC), "m0", "angry", 0.20, (100, 100, 100, 300), ("angry", True)),
]
WINDOW_START = day(8, 6)


def fake_prediction(faces: int = 2, model: str = "m-test"):
    """A Prediction as predict_image makes it, without a model."""
    from facexpr.core.types import Box, FaceResult, Prediction

    rng = np.random.default_rng(faces)
    results = []
    for i in range(faces):
        probs = rng.dirichlet(np.ones(len(EXPRESSIONS))).astype(np.float32)
        results.append(FaceResult(Box(10 + 60 * i, 12, 50, 50), np.zeros((48, 48), np.uint8), probs))
    return Prediction(image_sha256="ab" * 32, gray=np.zeros((100, 200), np.uint8), faces=results,
                      mode="detect", model_version=model,
                      latency_ms={"decode": 1.5, "detect": 20.25, "classify": 3.0, "total": 24.75})
