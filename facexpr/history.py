"""Prediction history: one document per face, MongoDB (pymongo) or an embedded SQLite file.

Both backends keep the documents DESIGN.md lists (`ts` UTC, `model_version`, `image_sha256`,
`face_index`, `box`, `expression`, `confidence`, `probabilities`, `latency_ms`, `source`, and
`feedback` once a person answers) and answer the same few aggregate queries, so `health` never
loads documents into pandas:

- `confidence_cube`: counts and confidence sums per (UTC day, model, expression, confidence bin);
- `latency_bins`: counts per (stage, log-latency bin), from which percentiles are read;
- `feedback_counts`: answers per (day, model, predicted, human label, confirmed);
- `relabel_counts`: answers given since a time (e.g. since the served model was trained).

The embedded store keeps per-day rollups of the first two beside the raw rows (updated in the
same transaction as each insert), so a 30-day window reads a few thousand rollup rows plus the
raw rows of at most one partial day, whatever the traffic.

MongoDB outages never lose anything: every write goes first to a local outbox under
`FACEXPR_DATA_DIR` and is delivered in order; while the server is unreachable the write stays
there, the caller gets `HistoryBuffered` (a warning, not a failure), and the next write, health
query or `flush()` delivers it. Documents carry client-made ids, so a retried delivery never
duplicates.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from facexpr.config import Settings
from facexpr.errors import FacexprError
from facexpr.labels import EXPRESSIONS, parse_label

if TYPE_CHECKING:
    from facexpr.predict import Prediction

log = logging.getLogger(__name__)

SOURCES: tuple[str, ...] = ("upload", "camera", "batch", "cli")
STAGES: tuple[str, ...] = ("decode", "detect", "classify", "total")
CONFIDENCE_BINS = 20  # histogram bins of width 0.05; bin 10 starts at the low-confidence line
LOW_CONFIDENCE = 0.5
LATENCY_BINS_PER_OCTAVE = 32  # bin centres 2**(1/32) apart: a percentile is within ±1.1 %
LATENCY_FLOOR_MS = 0.001  # a stage reported as 0 ms is counted in the lowest bin
EMBEDDED_FILE = "history.sqlite3"
OUTBOX_FILE = "history-outbox.sqlite3"
MONGO_COLLECTION = "predictions"
RETRY_AFTER_S = 15.0  # after a failed attempt, writes go straight to the outbox for this long
DAY_S = 86400
_EPOCH = date(1970, 1, 1)

CubeRow = tuple[date, str, str, int, int, float]  # day, model, expression, bin, count, sum of confidence
LatencyRow = tuple[str, int, int]  # stage, bin, count
FeedbackRow = tuple[date, str, str, str, bool, int]  # day, model, predicted, label, confirmed, count
RelabelRow = tuple[str, bool, int]  # label, confirmed, count


class HistoryError(FacexprError):
    """The history refused a request (an unknown record id, a broken database file, bad input)."""


class HistoryUnavailable(HistoryError):
    """The history database cannot be reached now; the health page says so instead of failing."""


class HistoryBuffered(HistoryUnavailable):
    """The database is unreachable, so the write was kept locally and will be delivered later.

    Nothing is lost: `record_ids` are the ids the records will have once delivered.
    """

    def __init__(self, message: str, record_ids: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.record_ids = list(record_ids)


class History(Protocol):
    """What the pages, the CLI and `health` use; `open_history` picks the backend."""

    backend: str  # "mongodb" or "embedded"
    location: str  # where the documents live, for messages (never contains a password)

    def record(self, prediction: Prediction, source: str, ts: datetime | None = None) -> list[str]:
        """Store one document per face of PREDICTION; returns their ids, in face order."""

    def insert_documents(self, docs: Iterable[dict[str, Any]]) -> list[str]:
        """Store ready-made documents (the fields DESIGN.md lists); bulk loads and tests use it."""

    def attach_feedback(self, record_id: str, label: str, confirmed: bool, object_key: str | None,
                        ts: datetime | None = None) -> None:
        """Set the record's `feedback` {label, confirmed, ts, object_key} (a later answer replaces it)."""

    def get(self, record_id: str) -> dict[str, Any] | None:
        """The document with its `id`, or None."""

    def count(self, start: datetime | None = None, end: datetime | None = None) -> int: ...

    def pending(self) -> int:
        """Writes kept locally, waiting for the database (always 0 for the embedded store)."""

    def flush(self) -> int:
        """Deliver what waits locally; returns how many writes went through."""

    def confidence_cube(self, start: datetime | None, end: datetime | None) -> list[CubeRow]: ...

    def latency_bins(self, start: datetime | None, end: datetime | None) -> list[LatencyRow]: ...

    def feedback_counts(self, start: datetime | None, end: datetime | None) -> list[FeedbackRow]: ...

    def relabel_counts(self, since: datetime | None) -> list[RelabelRow]: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------- documents

def utc(value: datetime | str | None) -> datetime | None:
    """A UTC-aware datetime; naive values are taken as UTC, ISO strings are parsed."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def documents_for(prediction: Prediction, source: str, ts: datetime | None = None) -> list[dict[str, Any]]:
    """The history documents of PREDICTION: one per face (none when no face was found)."""
    when = utc(ts) or datetime.now(UTC)
    latency = {stage: float(prediction.latency_ms.get(stage, 0.0)) for stage in STAGES}
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


def _check_document(doc: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise one document (times to UTC, numbers to float) before it is stored."""
    try:
        source = doc["source"]
        if source not in SOURCES:
            raise HistoryError(f"Unknown source {source!r}: use one of {', '.join(SOURCES)}.")
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
        clean["feedback"] = _feedback(**doc["feedback"])
    return clean


def _feedback(label: str, confirmed: bool, ts: datetime | str | None = None,
              object_key: str | None = None) -> dict[str, Any]:
    return {"label": parse_label(label), "confirmed": bool(confirmed),
            "ts": utc(ts) or datetime.now(UTC), "object_key": object_key}


def _bounds(start: datetime | None, end: datetime | None) -> tuple[float, float]:
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


# ---------------------------------------------------------------- embedded (SQLite)

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
CREATE INDEX IF NOT EXISTS ix_predictions_ts ON predictions(ts);
CREATE INDEX IF NOT EXISTS ix_predictions_model_version ON predictions(model_version);
-- Answers are few: partial indexes keep the feedback queries off the big table.
CREATE INDEX IF NOT EXISTS ix_predictions_answered ON predictions(ts) WHERE feedback_label IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_predictions_feedback_ts ON predictions(feedback_ts)
    WHERE feedback_ts IS NOT NULL;
CREATE TABLE IF NOT EXISTS daily_confidence (
    day INTEGER NOT NULL, model_version TEXT NOT NULL, expression TEXT NOT NULL, bin INTEGER NOT NULL,
    n INTEGER NOT NULL, confidence_sum REAL NOT NULL,
    PRIMARY KEY (day, model_version, expression, bin)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS daily_latency (
    day INTEGER NOT NULL, stage TEXT NOT NULL, bin INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (day, stage, bin)
) WITHOUT ROWID;
"""

_DAY_SQL = f"CAST(ts / {DAY_S} AS INTEGER)"
_CONF_BIN_SQL = f"MIN({CONFIDENCE_BINS - 1}, CAST(confidence * {CONFIDENCE_BINS} AS INTEGER))"


def _lat_bin_sql(column: str) -> str:
    return (f"CAST(floor(log2(max({column}, {LATENCY_FLOOR_MS})) * {LATENCY_BINS_PER_OCTAVE} + 0.5) "
            "AS INTEGER)")


# Rollups of the rows with id in [?, ?]: run in the inserting transaction, so they always agree.
_ROLLUP_CONFIDENCE = f"""
INSERT INTO daily_confidence (day, model_version, expression, bin, n, confidence_sum)
SELECT {_DAY_SQL}, model_version, expression, {_CONF_BIN_SQL}, COUNT(*), SUM(confidence)
FROM predictions WHERE id BETWEEN ? AND ? GROUP BY 1, 2, 3, 4
ON CONFLICT (day, model_version, expression, bin)
DO UPDATE SET n = n + excluded.n, confidence_sum = confidence_sum + excluded.confidence_sum
"""
_ROLLUP_LATENCY = "\nUNION ALL\n".join(
    f"SELECT {_DAY_SQL} AS day, '{stage}' AS stage, {_lat_bin_sql('latency_' + stage)} AS bin "
    f"FROM predictions WHERE id BETWEEN :lo AND :hi" for stage in STAGES)
_ROLLUP_LATENCY = f"""
INSERT INTO daily_latency (day, stage, bin, n)
SELECT day, stage, bin, COUNT(*) FROM ({_ROLLUP_LATENCY}) WHERE true GROUP BY 1, 2, 3
ON CONFLICT (day, stage, bin) DO UPDATE SET n = n + excluded.n
"""

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
            self._db.executescript(_SCHEMA)
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
                db.execute(_ROLLUP_CONFIDENCE, (first, last))
                db.execute(_ROLLUP_LATENCY, {"lo": first, "hi": last})
            ids.extend(str(i) for i in range(first, last + 1))

        for doc in docs:
            chunk.append(self._row(_check_document(doc)))
            if len(chunk) >= batch:
                write(chunk)
                chunk = []
        if chunk:
            write(chunk)
        return ids

    def attach_feedback(self, record_id: str, label: str, confirmed: bool, object_key: str | None,
                        ts: datetime | None = None) -> None:
        fb = _feedback(label, confirmed, ts, object_key)
        with self._transaction() as db:
            cur = db.execute(
                "UPDATE predictions SET feedback_label = ?, feedback_confirmed = ?, feedback_ts = ?, "
                "feedback_object_key = ? WHERE id = ?",
                (fb["label"], int(fb["confirmed"]), fb["ts"].timestamp(), fb["object_key"],
                 _int_id(record_id)))
            if cur.rowcount == 0:
                raise HistoryError(f"No prediction record {record_id!r} in the history.")

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
            db.execute("DELETE FROM daily_confidence")
            db.execute("DELETE FROM daily_latency")
            db.execute(_ROLLUP_CONFIDENCE, (0, 2**62))
            db.execute(_ROLLUP_LATENCY, {"lo": 0, "hi": 2**62})

    # -- reads

    def get(self, record_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM predictions WHERE id = ?", (_int_id(record_id),))
        if not rows:
            return None
        (rid, ts, model, sha, face, box, expr, conf, probs, dec, det, cls, tot, source,
         fb_label, fb_confirmed, fb_ts, fb_key) = rows[0]
        doc = {"id": str(rid), "ts": _from_epoch(ts), "model_version": model, "image_sha256": sha,
               "face_index": face, "box": json.loads(box), "expression": expr, "confidence": conf,
               "probabilities": json.loads(probs),
               "latency_ms": {"decode": dec, "detect": det, "classify": cls, "total": tot}, "source": source}
        if fb_label is not None:
            doc["feedback"] = {"label": fb_label, "confirmed": bool(fb_confirmed), "ts": _from_epoch(fb_ts),
                               "object_key": fb_key}
        return doc

    def count(self, start: datetime | None = None, end: datetime | None = None) -> int:
        lo, hi = _bounds(start, end)
        return int(self._query("SELECT COUNT(*) FROM predictions WHERE ts >= ? AND ts < ?", (lo, hi))[0][0])

    @staticmethod
    def _split(start: datetime | None, end: datetime | None) -> tuple[int, int, list[tuple[float, float]]]:
        """Whole UTC days [d0, d1) read from the rollups, and the raw ts ranges left at the edges."""
        lo, hi = _bounds(start, end)
        d0 = -(2**40) if lo == -math.inf else math.ceil(lo / DAY_S)
        d1 = 2**40 if hi == math.inf else math.floor(hi / DAY_S)
        if d0 >= d1:  # the window lies within one or two partial days: raw rows only
            return 0, 0, [(lo, hi)]
        return d0, d1, [(lo, d0 * DAY_S), (d1 * DAY_S, hi)]

    def confidence_cube(self, start: datetime | None, end: datetime | None) -> list[CubeRow]:
        d0, d1, edges = self._split(start, end)
        raw = " UNION ALL ".join(
            f"SELECT {_DAY_SQL}, model_version, expression, {_CONF_BIN_SQL}, 1, confidence "
            "FROM predictions WHERE ts >= ? AND ts < ?" for _ in edges)
        sql = (f"SELECT day, model_version, expression, bin, SUM(n), SUM(s) FROM ("
               f"SELECT day, model_version, expression, bin, n, confidence_sum AS s FROM daily_confidence "
               f"WHERE day >= ? AND day < ? UNION ALL {raw}) GROUP BY 1, 2, 3, 4")  # names from the 1st arm
        params = [d0, d1, *[v for edge in edges for v in edge]]
        return [(_day(d), m, e, int(b), int(n), float(s)) for d, m, e, b, n, s in self._query(sql, params)]

    def latency_bins(self, start: datetime | None, end: datetime | None) -> list[LatencyRow]:
        d0, d1, edges = self._split(start, end)
        raw = " UNION ALL ".join(
            f"SELECT '{stage}', {_lat_bin_sql('latency_' + stage)}, 1 "
            "FROM predictions WHERE ts >= ? AND ts < ?" for _ in edges for stage in STAGES)
        sql = (f"SELECT stage, bin, SUM(n) FROM (SELECT stage, bin, n FROM daily_latency "
               f"WHERE day >= ? AND day < ? UNION ALL {raw}) GROUP BY 1, 2")
        params = [d0, d1, *[v for edge in edges for _ in STAGES for v in edge]]
        return [(s, int(b), int(n)) for s, b, n in self._query(sql, params)]

    def feedback_counts(self, start: datetime | None, end: datetime | None) -> list[FeedbackRow]:
        lo, hi = _bounds(start, end)
        rows = self._query(
            f"SELECT {_DAY_SQL}, model_version, expression, feedback_label, feedback_confirmed, COUNT(*) "
            "FROM predictions WHERE feedback_label IS NOT NULL AND ts >= ? AND ts < ? GROUP BY 1, 2, 3, 4, 5",
            (lo, hi))
        return [(_day(d), m, e, label, bool(c), int(n)) for d, m, e, label, c, n in rows]

    def relabel_counts(self, since: datetime | None) -> list[RelabelRow]:
        lo, _ = _bounds(since, None)
        rows = self._query(
            "SELECT feedback_label, feedback_confirmed, COUNT(*) FROM predictions "
            "WHERE feedback_ts IS NOT NULL AND feedback_ts >= ? GROUP BY 1, 2", (lo,))
        return [(label, bool(c), int(n)) for label, c, n in rows]


def _int_id(record_id: str) -> int:
    try:
        return int(record_id)
    except (TypeError, ValueError) as exc:
        raise HistoryError(f"{record_id!r} is not a record id of the embedded history.") from exc


# ---------------------------------------------------------------- outbox (for MongoDB)

class Outbox:
    """Writes waiting for MongoDB, in order, in a small SQLite file (survives restarts)."""

    def __init__(self, path: str | Path) -> None:
        from bson import json_util
        from bson.json_util import JSONOptions

        self.path = Path(path)
        self._dumps = lambda obj: json_util.dumps(obj, json_options=json_util.CANONICAL_JSON_OPTIONS)
        options = JSONOptions(tz_aware=True, tzinfo=UTC)
        self._loads = lambda text: json_util.loads(text, json_options=options)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            _ensure_math_functions(self._db)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                             "op TEXT NOT NULL, payload TEXT NOT NULL, added REAL NOT NULL)")
        return self._db

    def append(self, ops: Sequence[tuple[str, dict[str, Any]]]) -> list[int]:
        with self._lock:
            try:
                db = self._conn()
                db.execute("BEGIN IMMEDIATE")
                seqs = [db.execute("INSERT INTO outbox (op, payload, added) VALUES (?, ?, ?)",
                                   (op, self._dumps(payload), time.time())).lastrowid for op, payload in ops]
                db.execute("COMMIT")
                return seqs
            except (OSError, sqlite3.Error) as exc:
                raise HistoryError(f"The history outbox {self.path} could not be written: {exc}") from exc

    def items(self) -> list[tuple[int, str, dict[str, Any]]]:
        with self._lock:
            if self._db is None and not self.path.exists():
                return []
            rows = self._conn().execute("SELECT seq, op, payload FROM outbox ORDER BY seq").fetchall()
        return [(seq, op, self._loads(payload)) for seq, op, payload in rows]

    def remove(self, seq: int) -> None:
        with self._lock:
            self._conn().execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def __len__(self) -> int:
        with self._lock:
            if self._db is None and not self.path.exists():
                return 0
            return int(self._conn().execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


# ---------------------------------------------------------------- MongoDB

def _redact(uri: str) -> str:
    """The URI without its password, for messages."""
    if "@" not in uri:
        return uri
    scheme, _, rest = uri.partition("://")
    return f"{scheme}://…@{rest.rpartition('@')[2]}"


class MongoHistory:
    """The `predictions` collection of a MongoDB database, with a local outbox for outages."""

    backend = "mongodb"

    def __init__(self, uri: str | None = None, db_name: str = "facexpr", data_dir: str | Path = "data", *,
                 client: Any = None, timeout_ms: int = 2000) -> None:
        self.uri = uri
        self.db_name = db_name
        self.location = f"{_redact(uri)} (database {db_name})" if uri else f"MongoDB database {db_name}"
        self.timeout_ms = timeout_ms
        self.outbox = Outbox(Path(data_dir) / OUTBOX_FILE)
        self._client = client
        self._indexed = False
        self._down_until = 0.0
        self._down_reason = ""
        self._lock = threading.RLock()

    # -- plumbing

    def _collection(self):
        """The collection; the client is made on first use, so opening never waits on the network."""
        from pymongo.errors import ConfigurationError

        if self._client is None:
            from pymongo import MongoClient

            options: dict[str, Any] = {"tz_aware": True}
            lowered = (self.uri or "").lower()
            # A timeout written in the URI wins; otherwise stay short: a person is waiting.
            for key in ("serverSelectionTimeoutMS", "connectTimeoutMS", "socketTimeoutMS"):
                if key.lower() not in lowered:
                    options[key] = self.timeout_ms if key != "socketTimeoutMS" else 4 * self.timeout_ms
            try:
                self._client = MongoClient(self.uri, **options)
            except (ConfigurationError, ValueError) as exc:
                raise HistoryUnavailable(
                    f"FACEXPR_MONGODB_URI is not a usable MongoDB connection string: {exc}") from exc
        coll = self._client[self.db_name][MONGO_COLLECTION]
        if not self._indexed:
            coll.create_index("ts")
            coll.create_index("model_version")
            coll.create_index("feedback.ts", sparse=True)
            self._indexed = True
        return coll

    def _unavailable(self, exc: BaseException) -> HistoryUnavailable:
        self._down_until = time.monotonic() + RETRY_AFTER_S
        # pymongo's message carries the whole topology; the first clause says what went wrong.
        reason = str(exc).split(" (configured timeouts")[0].split(", Timeout:")[0].strip()
        self._down_reason = reason[:200] or type(exc).__name__
        return HistoryUnavailable(f"The history database at {self.location} is unreachable "
                                  f"({self._down_reason}).")

    def _resting(self) -> bool:
        return time.monotonic() < self._down_until

    def _apply(self, coll, op: str, payload: dict[str, Any]) -> int:
        """Deliver one outbox write; returns how many documents it touched."""
        from pymongo.errors import BulkWriteError

        if op == "insert":
            try:
                return len(coll.insert_many(payload["docs"], ordered=False).inserted_ids)
            except BulkWriteError as exc:
                # A retry after a delivery whose reply was lost: the same ids are already there.
                errors = exc.details.get("writeErrors", [])
                if any(e.get("code") != 11000 for e in errors):
                    raise
                return len(payload["docs"]) - len(errors)
        if op == "feedback":
            fb = payload["feedback"]
            # Only replace an older answer, so a late-delivered stale write cannot win.
            result = coll.update_one(
                {"_id": payload["_id"],
                 "$or": [{"feedback": {"$exists": False}}, {"feedback.ts": {"$lte": fb["ts"]}}]},
                {"$set": {"feedback": fb}})
            return result.matched_count
        raise HistoryError(f"Unknown outbox operation {op!r}.")

    def _flush_locked(self) -> dict[int, int]:
        from pymongo.errors import PyMongoError

        done: dict[int, int] = {}
        items = self.outbox.items()
        if not items:
            return done
        try:
            coll = self._collection()
            for seq, op, payload in items:
                done[seq] = self._apply(coll, op, payload)
                if op == "feedback" and done[seq] == 0:
                    log.warning("history: feedback for unknown record %s dropped", payload.get("_id"))
                self.outbox.remove(seq)
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc
        self._down_until = 0.0
        return done

    def flush(self) -> int:
        """Deliver the outbox now (even while resting after a failure). Raises HistoryUnavailable
        when the database is still unreachable; what was not delivered stays queued."""
        with self._lock:
            return len(self._flush_locked())

    def _submit(self, ops: list[tuple[str, dict[str, Any]]], record_ids: list[str]) -> dict[int, int]:
        with self._lock:
            seqs = self.outbox.append(ops)  # written down first: a crash or outage loses nothing
            try:
                if self._resting():
                    raise HistoryUnavailable(f"The history database at {self.location} is unreachable "
                                             f"({self._down_reason}).")
                done = self._flush_locked()
            except HistoryUnavailable as exc:
                waiting = len(self.outbox)
                raise HistoryBuffered(f"{exc} It is kept locally ({waiting} write(s) waiting) and will be "
                                      "saved when the database is back.", record_ids) from exc
            return {seq: done.get(seq, 0) for seq in seqs}

    def _read(self, work):
        from pymongo.errors import PyMongoError

        with self._lock:
            if self._resting():
                raise HistoryUnavailable(f"The history database at {self.location} is unreachable "
                                         f"({self._down_reason}).")
            if len(self.outbox):
                self._flush_locked()  # so buffered records show as soon as the database is back
            try:
                return work(self._collection())
            except PyMongoError as exc:
                raise self._unavailable(exc) from exc

    # -- writes

    def record(self, prediction: Prediction, source: str, ts: datetime | None = None) -> list[str]:
        return self.insert_documents(documents_for(prediction, source, ts))

    def insert_documents(self, docs: Iterable[dict[str, Any]], batch: int = 10_000) -> list[str]:
        from bson import ObjectId

        clean = [{"_id": ObjectId(), **_check_document(doc)} for doc in docs]
        if not clean:
            return []
        ids = [str(d["_id"]) for d in clean]
        self._submit([("insert", {"docs": clean[i:i + batch]}) for i in range(0, len(clean), batch)], ids)
        return ids

    def attach_feedback(self, record_id: str, label: str, confirmed: bool, object_key: str | None,
                        ts: datetime | None = None) -> None:
        payload = {"_id": _object_id(record_id), "feedback": _feedback(label, confirmed, ts, object_key)}
        touched = self._submit([("feedback", payload)], [record_id])
        if not any(touched.values()):
            raise HistoryError(f"No prediction record {record_id!r} in the history.")

    def pending(self) -> int:
        return len(self.outbox)

    def close(self) -> None:
        self.outbox.close()
        if self._client is not None and hasattr(self._client, "close"):
            self._client.close()

    # -- reads

    def get(self, record_id: str) -> dict[str, Any] | None:
        oid = _object_id(record_id)
        doc = self._read(lambda c: c.find_one({"_id": oid}))
        if doc is None:
            return None
        doc["id"] = str(doc.pop("_id"))
        return doc

    @staticmethod
    def _window(start: datetime | None, end: datetime | None, field: str = "ts") -> dict[str, Any]:
        cond: dict[str, Any] = {}
        if start is not None:
            cond["$gte"] = utc(start)
        if end is not None:
            cond["$lt"] = utc(end)
        return {field: cond} if cond else {}

    def count(self, start: datetime | None = None, end: datetime | None = None) -> int:
        return int(self._read(lambda c: c.count_documents(self._window(start, end))))

    def confidence_cube(self, start: datetime | None, end: datetime | None) -> list[CubeRow]:
        pipeline = [
            {"$match": self._window(start, end)},
            {"$group": {
                "_id": {"d": {"$dateToString": {"format": "%Y-%m-%d", "date": "$ts"}},
                        "m": "$model_version", "e": "$expression",
                        "b": {"$min": [CONFIDENCE_BINS - 1,
                                       {"$floor": {"$multiply": ["$confidence", CONFIDENCE_BINS]}}]}},
                "n": {"$sum": 1}, "s": {"$sum": "$confidence"}}},
        ]
        rows = self._read(lambda c: list(c.aggregate(pipeline, allowDiskUse=True)))
        return [(date.fromisoformat(r["_id"]["d"]), r["_id"]["m"], r["_id"]["e"], int(r["_id"]["b"]),
                 int(r["n"]), float(r["s"])) for r in rows]

    def latency_bins(self, start: datetime | None, end: datetime | None) -> list[LatencyRow]:
        def bin_of(field: str) -> dict[str, Any]:
            value = {"$cond": [{"$gt": [field, LATENCY_FLOOR_MS]}, field, LATENCY_FLOOR_MS]}
            return {"$floor": {"$add": [{"$multiply": [{"$log": [value, 2]}, LATENCY_BINS_PER_OCTAVE]}, 0.5]}}

        # One pass over the window: each $facet arm groups one stage.
        pipeline = [
            {"$match": self._window(start, end)},
            {"$project": {"_id": 0, "latency_ms": 1}},
            {"$facet": {stage: [{"$group": {"_id": bin_of(f"$latency_ms.{stage}"), "n": {"$sum": 1}}}]
                        for stage in STAGES}},
        ]
        result = self._read(lambda c: list(c.aggregate(pipeline, allowDiskUse=True)))
        facets = result[0] if result else {}
        return [(stage, int(r["_id"]), int(r["n"])) for stage in STAGES for r in facets.get(stage, [])]

    def feedback_counts(self, start: datetime | None, end: datetime | None) -> list[FeedbackRow]:
        match = {**self._window(start, end), "feedback.label": {"$exists": True}}
        pipeline = [
            {"$match": match},
            {"$group": {"_id": {"d": {"$dateToString": {"format": "%Y-%m-%d", "date": "$ts"}},
                                "m": "$model_version", "e": "$expression", "l": "$feedback.label",
                                "c": "$feedback.confirmed"},
                        "n": {"$sum": 1}}},
        ]
        rows = self._read(lambda c: list(c.aggregate(pipeline)))
        return [(date.fromisoformat(r["_id"]["d"]), r["_id"]["m"], r["_id"]["e"], r["_id"]["l"],
                 bool(r["_id"]["c"]), int(r["n"])) for r in rows]

    def relabel_counts(self, since: datetime | None) -> list[RelabelRow]:
        match = self._window(since, None, "feedback.ts") or {"feedback.ts": {"$exists": True}}
        pipeline = [{"$match": match},
                    {"$group": {"_id": {"l": "$feedback.label", "c": "$feedback.confirmed"},
                                "n": {"$sum": 1}}}]
        rows = self._read(lambda c: list(c.aggregate(pipeline)))
        return [(r["_id"]["l"], bool(r["_id"]["c"]), int(r["n"])) for r in rows]


def _object_id(record_id: str):
    from bson import ObjectId
    from bson.errors import InvalidId

    try:
        return ObjectId(str(record_id))
    except InvalidId as exc:
        raise HistoryError(f"{record_id!r} is not a record id of the MongoDB history.") from exc


# ---------------------------------------------------------------- choosing and using one

def open_history(settings: Settings) -> History:
    """MongoDB when FACEXPR_MONGODB_URI is set, else the embedded file under FACEXPR_DATA_DIR.

    Never waits on the network: a MongoDB history connects on first use.
    """
    if settings.mongodb_uri:
        return MongoHistory(settings.mongodb_uri, settings.mongodb_db, settings.data_dir)
    return SqliteHistory(Path(settings.data_dir) / EMBEDDED_FILE)


def _memo_key(prediction: Prediction, source: str) -> str:
    return f"_history_ids:{prediction.image_sha256}:{prediction.mode}:{prediction.model_version}:{source}"


HistorySource = History | Callable[[], History] | None  # a history, or how to open one (e.g. ui.get_history)


def _resolve(history: HistorySource) -> History | None:
    return history() if callable(history) and not hasattr(history, "record") else history


def record_safely(history: HistorySource, prediction: Prediction, source: str,
                  memo: MutableMapping[str, Any] | None = None) -> str | None:
    """Record PREDICTION once (per MEMO, e.g. st.session_state: reruns do not record again).

    Returns None, or a warning a page can show; never raises (not even when the history cannot be
    opened). Call it after the answer is shown.
    """
    key = _memo_key(prediction, source)
    if memo is not None and key in memo:
        return None
    if history is None or prediction.no_face:
        return None
    try:
        ids = _resolve(history).record(prediction, source)
    except HistoryBuffered as exc:
        ids, message = exc.record_ids, str(exc)
    except FacexprError as exc:
        return f"This prediction could not be added to the history: {exc}"
    except Exception as exc:  # the answer is already on screen; history must never break the page
        log.exception("history: record failed")
        return f"This prediction could not be added to the history: {exc}"
    else:
        message = None
    if memo is not None:
        memo[key] = ids
    return message


def record_batch_safely(history: HistorySource, predictions: Sequence[Prediction], source: str) -> str | None:
    """Record many predictions in one write (one transaction, one round trip); like record_safely,
    returns None or a warning and never raises."""
    docs = [doc for p in predictions for doc in documents_for(p, source)]
    if history is None or not docs:
        return None
    try:
        _resolve(history).insert_documents(docs)
    except HistoryBuffered as exc:
        return str(exc)
    except Exception as exc:  # the answers are already on screen; history must never break the page
        log.exception("history: batch record failed")
        return f"These answers could not be added to the history: {exc}"
    return None


def feedback_safely(history: HistorySource, prediction: Prediction, face_index: int, label: str,
                    confirmed: bool, object_key: str | None, source: str = "upload",
                    memo: MutableMapping[str, Any] | None = None) -> str | None:
    """Attach a person's answer to face FACE_INDEX of PREDICTION (recording it first if needed).

    Returns None, or a warning a page can show; never raises.
    """
    if history is None:
        return None
    memo = {} if memo is None else memo
    key = _memo_key(prediction, source)
    ids = memo.get(key)
    warning = None
    if not ids:
        warning = record_safely(history, prediction, source, memo)
        ids = memo.get(key)
        if not ids:
            return warning or "The answer was saved, but the prediction is not in the history."
    try:
        _resolve(history).attach_feedback(ids[face_index], label, confirmed, object_key)
    except HistoryBuffered as exc:
        return str(exc)
    except (FacexprError, IndexError) as exc:
        return f"The answer was saved, but the history could not note it: {exc}"
    except Exception as exc:
        log.exception("history: feedback failed")
        return f"The answer was saved, but the history could not note it: {exc}"
    return warning
