"""The embedded history: one SQLite file (WAL) under FACEXPR_DATA_DIR.

Per-day rollups of the confidence and latency bins and of the images with and without a face sit
beside the raw rows, keyed by source too (updated in the same transaction as each insert), so a
30-day window reads a few thousand rollup rows plus the raw rows of at most one partial day,
whatever the traffic. Rollups are derived data: a file whose rollups predate a change is rebuilt
on open.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facexpr.core.errors import HistoryError
from facexpr.storage.history.documents import (
    CONFIDENCE_BINS,
    DAY_S,
    LATENCY_BINS_PER_OCTAVE,
    LATENCY_FLOOR_MS,
    STAGES,
    CubeRow,
    DetectionRow,
    FeedbackRow,
    LatencyRow,
    RelabelRow,
    bounds,
    check_document,
    documents_for,
    feedback_of,
)

if TYPE_CHECKING:
    from facexpr.core.types import Prediction

EMBEDDED_FILE = "history.sqlite3"
NO_FACE_INDEX = -1  # how a no-face document is stored: a row with this face_index, empty face columns
_EPOCH = date(1970, 1, 1)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,                -- UTC, seconds since the epoch
    model_version TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    face_index INTEGER NOT NULL,
    box TEXT NOT NULL,               -- JSON [x, y, w, h]
    expression TEXT NOT NULL,
    confidence REAL NOT NULL,
    probabilities TEXT NOT NULL,     -- JSON {expression: probability}
    latency_decode REAL NOT NULL,
    latency_detect REAL NOT NULL,
    latency_classify REAL NOT NULL,
    latency_total REAL NOT NULL,
    source TEXT NOT NULL,
    feedback_label TEXT,
    feedback_confirmed INTEGER,
    feedback_ts REAL,
    feedback_object_key TEXT
);
-- A shadow candidate's answer to a recorded face (facexpr.serve.shadow): never a record of its own.
CREATE TABLE IF NOT EXISTS shadow_answers (
    record_id INTEGER PRIMARY KEY,
    model_version TEXT NOT NULL,
    expression TEXT NOT NULL,
    confidence REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_shadow_model ON shadow_answers(model_version);
CREATE INDEX IF NOT EXISTS ix_predictions_ts ON predictions(ts);
CREATE INDEX IF NOT EXISTS ix_predictions_model_version ON predictions(model_version);
-- Answers are few: partial indexes keep the feedback queries off the big table.
CREATE INDEX IF NOT EXISTS ix_predictions_answered ON predictions(ts) WHERE feedback_label IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_predictions_feedback_ts ON predictions(feedback_ts)
    WHERE feedback_ts IS NOT NULL;
-- No-face documents are rows with face_index = -1 (NO_FACE_INDEX) and empty face columns.
-- Per-day rollups, by source (derived data: rebuilt from the rows when missing).
CREATE TABLE IF NOT EXISTS rollup_confidence (
    day INTEGER NOT NULL, source TEXT NOT NULL, model_version TEXT NOT NULL, expression TEXT NOT NULL,
    bin INTEGER NOT NULL, n INTEGER NOT NULL, confidence_sum REAL NOT NULL,
    PRIMARY KEY (day, source, model_version, expression, bin)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_latency (
    day INTEGER NOT NULL, source TEXT NOT NULL, stage TEXT NOT NULL, bin INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (day, source, stage, bin)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_detection (
    day INTEGER NOT NULL, source TEXT NOT NULL, images INTEGER NOT NULL, no_face INTEGER NOT NULL,
    PRIMARY KEY (day, source)
) WITHOUT ROWID;
DROP TABLE IF EXISTS daily_confidence;  -- the rollups before they were kept by source
DROP TABLE IF EXISTS daily_latency;
"""

_DAY_SQL = f"CAST(ts / {DAY_S} AS INTEGER)"
_SOURCE_SQL = "(:source IS NULL OR source = :source)"
_CONF_BIN_SQL = f"MIN({CONFIDENCE_BINS - 1}, CAST(confidence * {CONFIDENCE_BINS} AS INTEGER))"


def _lat_bin_sql(column: str) -> str:
    return (f"CAST(floor(log2(max({column}, {LATENCY_FLOOR_MS})) * {LATENCY_BINS_PER_OCTAVE} + 0.5) "
            "AS INTEGER)")


# Rollups of the rows with id in [:lo, :hi]: run in the inserting transaction, so they always agree.
_ROLLUP_CONFIDENCE = f"""
INSERT INTO rollup_confidence (day, source, model_version, expression, bin, n, confidence_sum)
SELECT {_DAY_SQL}, source, model_version, expression, {_CONF_BIN_SQL}, COUNT(*), SUM(confidence)
FROM predictions WHERE id BETWEEN :lo AND :hi AND face_index >= 0 GROUP BY 1, 2, 3, 4, 5
ON CONFLICT (day, source, model_version, expression, bin)
DO UPDATE SET n = n + excluded.n, confidence_sum = confidence_sum + excluded.confidence_sum
"""
_ROLLUP_LATENCY = "\nUNION ALL\n".join(
    f"SELECT {_DAY_SQL} AS day, source, '{stage}' AS stage, {_lat_bin_sql('latency_' + stage)} AS bin "
    f"FROM predictions WHERE id BETWEEN :lo AND :hi AND face_index >= 0" for stage in STAGES)
_ROLLUP_LATENCY = f"""
INSERT INTO rollup_latency (day, source, stage, bin, n)
SELECT day, source, stage, bin, COUNT(*) FROM ({_ROLLUP_LATENCY}) WHERE true GROUP BY 1, 2, 3, 4
ON CONFLICT (day, source, stage, bin) DO UPDATE SET n = n + excluded.n
"""
# An image is its face 0 or its no-face row.
_ROLLUP_DETECTION = f"""
INSERT INTO rollup_detection (day, source, images, no_face)
SELECT {_DAY_SQL}, source, COUNT(*), SUM(face_index = {NO_FACE_INDEX})
FROM predictions WHERE id BETWEEN :lo AND :hi AND face_index <= 0 GROUP BY 1, 2
ON CONFLICT (day, source)
DO UPDATE SET images = images + excluded.images, no_face = no_face + excluded.no_face
"""
_ROLLUPS = (_ROLLUP_CONFIDENCE, _ROLLUP_LATENCY, _ROLLUP_DETECTION)

_INSERT = """
INSERT INTO predictions (ts, model_version, image_sha256, face_index, box, expression, confidence,
    probabilities, latency_decode, latency_detect, latency_classify, latency_total, source,
    feedback_label, feedback_confirmed, feedback_ts, feedback_object_key)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


def _day(number: int) -> date:
    return _EPOCH + timedelta(days=int(number))


def _from_epoch(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _ensure_math_functions(db: sqlite3.Connection) -> None:
    """SQLite's floor/log2 are a compile-time option: a libsqlite3 loaded earlier by another
    library (TensorFlow brings one without them) wins over Python's. Supply them when missing."""
    try:
        db.execute("SELECT floor(log2(2.0))")
    except sqlite3.OperationalError:
        db.create_function("floor", 1, lambda v: None if v is None else math.floor(v), deterministic=True)
        db.create_function("log2", 1, lambda v: None if v is None or v <= 0 else math.log2(v),
                           deterministic=True)


class SqliteHistory:
    """The embedded store: one SQLite file (WAL) under FACEXPR_DATA_DIR, safe across threads.

    One connection guarded by a lock serves every Streamlit session thread of the process; other
    processes (the CLI) share the file through SQLite's own locking.
    """

    backend = "embedded"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            _ensure_math_functions(self._db)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
            had_rollups = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'rollup_detection'").fetchone()
            self._db.executescript(_SCHEMA)
            if not had_rollups:
                self.rebuild_rollups()  # a file from before the current rollups (or a new, empty one)
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError(f"The embedded history {self.path} cannot be opened: {exc}") from exc

    # -- plumbing

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise HistoryError(f"The embedded history {self.path} could not be written: {exc}") from exc

    def _query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise HistoryError(f"The embedded history {self.path} could not be read: {exc}") from exc

    @staticmethod
    def _row(doc: dict[str, Any]) -> tuple:
        lat = doc["latency_ms"]
        if doc.get("no_face"):
            return (doc["ts"].timestamp(), doc["model_version"], doc["image_sha256"], NO_FACE_INDEX, "[]", "",
                    0.0, "{}", lat["decode"], lat["detect"], lat["classify"], lat["total"], doc["source"],
                    None, None, None, None)
        fb = doc.get("feedback") or {}
        return (doc["ts"].timestamp(), doc["model_version"], doc["image_sha256"], doc["face_index"],
                json.dumps(doc["box"]), doc["expression"], doc["confidence"],
                json.dumps(doc["probabilities"]), lat["decode"], lat["detect"], lat["classify"],
                lat["total"], doc["source"], fb.get("label"),
                None if not fb else int(fb["confirmed"]), fb["ts"].timestamp() if fb else None,
                fb.get("object_key"))

    # -- writes

    def record(self, prediction: Prediction, source: str, ts: datetime | None = None) -> list[str]:
        return self.insert_documents(documents_for(prediction, source, ts))

    def insert_documents(self, docs: Iterable[dict[str, Any]], batch: int = 50_000) -> list[str]:
        ids: list[str] = []
        chunk: list[tuple] = []

        def write(rows: list[tuple]) -> None:
            with self._transaction() as db:
                first = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM predictions").fetchone()[0]
                db.executemany(_INSERT, rows)
                last = first + len(rows) - 1
                for rollup in _ROLLUPS:
                    db.execute(rollup, {"lo": first, "hi": last})
            ids.extend(str(i) for i in range(first, last + 1))

        for doc in docs:
            chunk.append(self._row(check_document(doc)))
            if len(chunk) >= batch:
                write(chunk)
                chunk = []
        if chunk:
            write(chunk)
        return ids

    def attach_feedback(self, record_id: str, label: str, confirmed: bool, object_key: str | None,
                        ts: datetime | None = None) -> None:
        fb = feedback_of(label, confirmed, ts, object_key)
        with self._transaction() as db:
            cur = db.execute(
                "UPDATE predictions SET feedback_label = ?, feedback_confirmed = ?, feedback_ts = ?, "
                "feedback_object_key = ? WHERE id = ? AND face_index >= 0 "
                "AND (feedback_ts IS NULL OR feedback_ts <= ?)",
                (fb["label"], int(fb["confirmed"]), fb["ts"].timestamp(), fb["object_key"],
                 _int_id(record_id), fb["ts"].timestamp()))
            exists = "SELECT 1 FROM predictions WHERE id = ? AND face_index >= 0"
            if cur.rowcount == 0 and not db.execute(exists, (_int_id(record_id),)).fetchone():
                raise HistoryError(f"No prediction record {record_id!r} in the history.")

    def attach_shadow(self, record_id: str, model_version: str, expression: str, confidence: float) -> None:
        with self._transaction() as db:
            if not db.execute("SELECT 1 FROM predictions WHERE id = ? AND face_index >= 0",
                              (_int_id(record_id),)).fetchone():
                raise HistoryError(f"No prediction record {record_id!r} in the history.")
            db.execute("INSERT OR REPLACE INTO shadow_answers VALUES (?, ?, ?, ?)",
                       (_int_id(record_id), model_version, expression, float(confidence)))

    def shadow_answers(self, model_version: str, served: str | None = None
                       ) -> list[tuple[str, str, str | None]]:
        return [tuple(r) for r in self._query(
            "SELECT p.expression, s.expression, p.feedback_label FROM shadow_answers s "
            "JOIN predictions p ON p.id = s.record_id WHERE s.model_version = ? "
            "AND (? IS NULL OR p.model_version = ?)", (model_version, served, served))]

    def pending(self) -> int:
        return 0

    def flush(self) -> int:
        return 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def rebuild_rollups(self) -> None:
        """Recompute the per-day rollups from the raw rows (after editing the file by hand)."""
        with self._transaction() as db:
            for table in ("rollup_confidence", "rollup_latency", "rollup_detection"):
                db.execute(f"DELETE FROM {table}")
            for rollup in _ROLLUPS:
                db.execute(rollup, {"lo": 0, "hi": 2**62})

    # -- reads

    def get(self, record_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM predictions WHERE id = ?", (_int_id(record_id),))
        if not rows:
            return None
        (rid, ts, model, sha, face, box, expr, conf, probs, dec, det, cls, tot, source,
         fb_label, fb_confirmed, fb_ts, fb_key) = rows[0]
        latency = {"decode": dec, "detect": det, "classify": cls, "total": tot}
        if face == NO_FACE_INDEX:
            return {"id": str(rid), "ts": _from_epoch(ts), "model_version": model, "image_sha256": sha,
                    "latency_ms": latency, "source": source, "no_face": True}
        doc = {"id": str(rid), "ts": _from_epoch(ts), "model_version": model, "image_sha256": sha,
               "face_index": face, "box": json.loads(box), "expression": expr, "confidence": conf,
               "probabilities": json.loads(probs),
               "latency_ms": {"decode": dec, "detect": det, "classify": cls, "total": tot}, "source": source}
        if fb_label is not None:
            doc["feedback"] = {"label": fb_label, "confirmed": bool(fb_confirmed), "ts": _from_epoch(fb_ts),
                               "object_key": fb_key}
        shadow = self._query("SELECT model_version, expression, confidence FROM shadow_answers "
                             "WHERE record_id = ?", (rid,))
        if shadow:
            doc["shadow"] = dict(zip(("model_version", "expression", "confidence"), shadow[0], strict=True))
        return doc

    def count(self, start: datetime | None = None, end: datetime | None = None) -> int:
        lo, hi = bounds(start, end)
        return int(self._query("SELECT COUNT(*) FROM predictions WHERE ts >= ? AND ts < ? "
                               "AND face_index >= 0", (lo, hi))[0][0])

    @staticmethod
    def _split(start: datetime | None, end: datetime | None) -> tuple[int, int, list[tuple[float, float]]]:
        """Whole UTC days [d0, d1) read from the rollups, and the raw ts ranges left at the edges."""
        lo, hi = bounds(start, end)
        d0 = -(2**40) if lo == -math.inf else math.ceil(lo / DAY_S)
        d1 = 2**40 if hi == math.inf else math.floor(hi / DAY_S)
        if d0 >= d1:  # the window lies within one or two partial days: raw rows only
            return 0, 0, [(lo, hi)]
        return d0, d1, [(lo, d0 * DAY_S), (d1 * DAY_S, hi)]

    @staticmethod
    def _params(d0: int, d1: int, edges: list[tuple[float, float]], source: str | None) -> dict[str, Any]:
        edge_bounds = {f"{side}{i}": v for i, (lo, hi) in enumerate(edges)
                       for side, v in (("l", lo), ("h", hi))}
        return {"d0": d0, "d1": d1, "source": source, **edge_bounds}

    def _rollup_and_edges(self, start: datetime | None, end: datetime | None, source: str | None, *,
                          rollup: str, raw: Sequence[str], faces: str, total: str,
                          group_by: str) -> list[tuple]:
        """Sum a day rollup over the window's whole days with the raw rows at its ragged edges.

        ROLLUP is "columns FROM rollup_table"; each of RAW is one arm's columns over the raw
        predictions (several arms per edge for the latency stages), in the same order; FACES is
        the raw rows' face_index condition; TOTAL, grouped by GROUP_BY, is what the union sums to.
        """
        d0, d1, edges = self._split(start, end)
        edge_arms = " UNION ALL ".join(
            f"SELECT {columns} FROM predictions "
            f"WHERE ts >= :l{i} AND ts < :h{i} AND {faces} AND {_SOURCE_SQL}"
            for i in range(len(edges)) for columns in raw)
        # The union's column names come from its first arm, the rollup's.
        sql = (f"SELECT {total} FROM (SELECT {rollup} WHERE day >= :d0 AND day < :d1 AND {_SOURCE_SQL} "
               f"UNION ALL {edge_arms}) GROUP BY {group_by}")
        return self._query(sql, self._params(d0, d1, edges, source))

    def confidence_cube(self, start: datetime | None, end: datetime | None,
                        source: str | None = None) -> list[CubeRow]:
        rows = self._rollup_and_edges(
            start, end, source,
            rollup="day, model_version, expression, bin, n, confidence_sum AS s FROM rollup_confidence",
            raw=[f"{_DAY_SQL}, model_version, expression, {_CONF_BIN_SQL}, 1, confidence"],
            faces="face_index >= 0",
            total="day, model_version, expression, bin, SUM(n), SUM(s)", group_by="1, 2, 3, 4")
        return [(_day(d), m, e, int(b), int(n), float(s)) for d, m, e, b, n, s in rows]

    def latency_bins(self, start: datetime | None, end: datetime | None,
                     source: str | None = None) -> list[LatencyRow]:
        rows = self._rollup_and_edges(
            start, end, source,
            rollup="stage, bin, n FROM rollup_latency",
            raw=[f"'{stage}', {_lat_bin_sql('latency_' + stage)}, 1" for stage in STAGES],
            faces="face_index >= 0",
            total="stage, bin, SUM(n)", group_by="1, 2")
        return [(s, int(b), int(n)) for s, b, n in rows]

    def detection_counts(self, start: datetime | None, end: datetime | None,
                         source: str | None = None) -> list[DetectionRow]:
        rows = self._rollup_and_edges(
            start, end, source,
            rollup="day, source, images, no_face FROM rollup_detection",
            raw=[f"{_DAY_SQL}, source, 1, face_index = {NO_FACE_INDEX}"],
            faces="face_index <= 0",  # one row per image: its first face, or its no-face row
            total="day, source, SUM(images), SUM(no_face)", group_by="1, 2")
        return [(_day(d), src, int(n), int(nf)) for d, src, n, nf in rows]

    def feedback_counts(self, start: datetime | None, end: datetime | None,
                        source: str | None = None) -> list[FeedbackRow]:
        lo, hi = bounds(start, end)
        rows = self._query(
            f"SELECT {_DAY_SQL}, model_version, expression, feedback_label, feedback_confirmed, COUNT(*) "
            f"FROM predictions WHERE feedback_label IS NOT NULL AND ts >= :lo AND ts < :hi AND {_SOURCE_SQL} "
            "GROUP BY 1, 2, 3, 4, 5", {"lo": lo, "hi": hi, "source": source})
        return [(_day(d), m, e, label, bool(c), int(n)) for d, m, e, label, c, n in rows]

    def relabel_counts(self, since: datetime | None) -> list[RelabelRow]:
        lo, _ = bounds(since, None)
        rows = self._query(
            "SELECT feedback_label, feedback_confirmed, COUNT(*) FROM predictions "
            "WHERE feedback_ts IS NOT NULL AND feedback_ts >= ? GROUP BY 1, 2", (lo,))
        return [(label, bool(c), int(n)) for label, c, n in rows]

    def unanswered(self, since: datetime | None, limit: int = 200) -> list[dict[str, Any]]:
        lo, _ = bounds(since, None)
        rows = self._query(
            "SELECT id, ts, p.model_version, image_sha256, face_index, box, p.expression, p.confidence, "
            "probabilities, source, s.model_version, s.expression FROM predictions p "
            "LEFT JOIN shadow_answers s ON s.record_id = p.id WHERE ts >= ? AND feedback_label IS NULL "
            "AND face_index >= 0 "  # a no-face row (-1) has no face to review
            "AND NOT EXISTS (SELECT 1 FROM predictions a WHERE a.feedback_label IS NOT NULL "
            "AND a.image_sha256 = p.image_sha256 AND a.face_index = p.face_index) "
            "ORDER BY ts DESC, id DESC LIMIT ?", (lo, int(limit)))
        return [{"id": str(rid), "ts": _from_epoch(ts), "model_version": model, "image_sha256": sha,
                 "face_index": face, "box": json.loads(box), "expression": expr, "confidence": conf,
                 "probabilities": json.loads(probs), "source": source,
                 **({"shadow": {"model_version": s_model, "expression": s_expr}} if s_model else {})}
                for rid, ts, model, sha, face, box, expr, conf, probs, source, s_model, s_expr in rows]


def _int_id(record_id: str) -> int:
    try:
        return int(record_id)
    except (TypeError, ValueError) as exc:
        raise HistoryError(f"{record_id!r} is not a record id of the embedded history.") from exc
