"""The MongoDB history (pymongo): the `predictions` collection, behind a local write buffer.

Outages never lose anything: every write goes first to the buffer (a small SQLite file under
FACEXPR_DATA_DIR) and is delivered in order; while the server is unreachable the write stays
there, the caller gets `HistoryBuffered` (a warning, not a failure), and the next write, health
query or `flush()` delivers it. Documents carry client-made ids, so a retried delivery never
duplicates.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facexpr.core.errors import HistoryBuffered, HistoryError, HistoryUnavailable
from facexpr.core.times import utc
from facexpr.storage.history.documents import (
    CONFIDENCE_BINS,
    LATENCY_BINS_PER_OCTAVE,
    LATENCY_FLOOR_MS,
    STAGES,
    CubeRow,
    DetectionRow,
    FeedbackRow,
    LatencyRow,
    RelabelRow,
    check_document,
    documents_for,
    feedback_of,
)

if TYPE_CHECKING:
    from facexpr.core.types import Prediction

log = logging.getLogger(__name__)

BUFFER_FILE = "history-outbox.sqlite3"  # the file name predates the class name; kept so queued writes survive
MONGO_COLLECTION = "predictions"
RETRY_AFTER_S = 15.0  # after a failed attempt, writes go straight to the buffer for this long

class WriteBuffer:
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
                raise HistoryError(f"The history write buffer {self.path} could not be written: "
                                   f"{exc}") from exc

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
    """The `predictions` collection of a MongoDB database, with a local write buffer for outages."""

    backend = "mongodb"

    def __init__(self, uri: str | None = None, db_name: str = "facexpr", data_dir: str | Path = "data", *,
                 client: Any = None, timeout_ms: int = 2000) -> None:
        self.uri = uri
        self.db_name = db_name
        self.location = f"{_redact(uri)} (database {db_name})" if uri else f"MongoDB database {db_name}"
        self.timeout_ms = timeout_ms
        self.buffer = WriteBuffer(Path(data_dir) / BUFFER_FILE)
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
        """Deliver one buffered write; returns how many documents it touched."""
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
            face = {"_id": payload["_id"], "no_face": {"$exists": False}}
            result = coll.update_one(
                {**face, "$or": [{"feedback": {"$exists": False}}, {"feedback.ts": {"$lte": fb["ts"]}}]},
                {"$set": {"feedback": fb}})
            if result.matched_count:
                return 1
            # A newer answer (another session or process) is already there: it stays, and this
            # one counts as delivered; only a missing record is an error.
            return int(coll.count_documents(face, limit=1))
        if op == "shadow":
            face = {"_id": payload["_id"], "no_face": {"$exists": False}}
            return coll.update_one(face, {"$set": {"shadow": payload["shadow"]}}).matched_count
        raise HistoryError(f"Unknown buffered operation {op!r}.")

    def _flush_locked(self) -> dict[int, int]:
        from pymongo.errors import PyMongoError

        done: dict[int, int] = {}
        items = self.buffer.items()
        if not items:
            return done
        try:
            coll = self._collection()
            for seq, op, payload in items:
                done[seq] = self._apply(coll, op, payload)
                if op == "feedback" and done[seq] == 0:
                    log.warning("history: feedback for unknown record %s dropped", payload.get("_id"))
                self.buffer.remove(seq)
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc
        self._down_until = 0.0
        return done

    def flush(self) -> int:
        """Deliver the buffer now (even while resting after a failure). Raises HistoryUnavailable
        when the database is still unreachable; what was not delivered stays queued."""
        with self._lock:
            return len(self._flush_locked())

    def _submit(self, ops: list[tuple[str, dict[str, Any]]], record_ids: list[str]) -> dict[int, int]:
        with self._lock:
            seqs = self.buffer.append(ops)  # written down first: a crash or outage loses nothing
            try:
                if self._resting():
                    raise HistoryUnavailable(f"The history database at {self.location} is unreachable "
                                             f"({self._down_reason}).")
                done = self._flush_locked()
            except HistoryUnavailable as exc:
                waiting = len(self.buffer)
                raise HistoryBuffered(f"{exc} It is kept locally ({waiting} write(s) waiting) and will be "
                                      "saved when the database is back.", record_ids) from exc
            return {seq: done.get(seq, 0) for seq in seqs}

    def _read(self, work):
        from pymongo.errors import PyMongoError

        with self._lock:
            if self._resting():
                raise HistoryUnavailable(f"The history database at {self.location} is unreachable "
                                         f"({self._down_reason}).")
            if len(self.buffer):
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

        clean = [{"_id": ObjectId(), **check_document(doc)} for doc in docs]
        if not clean:
            return []
        ids = [str(d["_id"]) for d in clean]
        self._submit([("insert", {"docs": clean[i:i + batch]}) for i in range(0, len(clean), batch)], ids)
        return ids

    def attach_feedback(self, record_id: str, label: str, confirmed: bool, object_key: str | None,
                        ts: datetime | None = None) -> None:
        payload = {"_id": _object_id(record_id), "feedback": feedback_of(label, confirmed, ts, object_key)}
        touched = self._submit([("feedback", payload)], [record_id])
        if not any(touched.values()):
            raise HistoryError(f"No prediction record {record_id!r} in the history.")

    def attach_shadow(self, record_id: str, model_version: str, expression: str, confidence: float) -> None:
        shadow = {"model_version": model_version, "expression": expression, "confidence": float(confidence)}
        payload = {"_id": _object_id(record_id), "shadow": shadow}
        touched = self._submit([("shadow", payload)], [record_id])
        if not any(touched.values()):
            raise HistoryError(f"No prediction record {record_id!r} in the history.")

    def shadow_answers(self, model_version: str, served: str | None = None
                       ) -> list[tuple[str, str, str | None]]:
        query = {"shadow.model_version": model_version, **({"model_version": served} if served else {})}
        docs = self._read(lambda c: list(c.find(query,
                                                {"expression": 1, "shadow": 1, "feedback.label": 1})))
        return [(d["expression"], d["shadow"]["expression"], (d.get("feedback") or {}).get("label"))
                for d in docs]

    def pending(self) -> int:
        return len(self.buffer)

    def close(self) -> None:
        self.buffer.close()
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

    @classmethod
    def _faces(cls, start: datetime | None, end: datetime | None, source: str | None) -> dict[str, Any]:
        """Face documents (not no-face ones) in the window, of SOURCE when given."""
        return {**cls._window(start, end), "no_face": {"$exists": False},
                **({"source": source} if source else {})}

    def count(self, start: datetime | None = None, end: datetime | None = None) -> int:
        return int(self._read(lambda c: c.count_documents(self._faces(start, end, None))))

    def confidence_cube(self, start: datetime | None, end: datetime | None,
                        source: str | None = None) -> list[CubeRow]:
        pipeline = [
            {"$match": self._faces(start, end, source)},
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

    def latency_bins(self, start: datetime | None, end: datetime | None,
                     source: str | None = None) -> list[LatencyRow]:
        def bin_of(field: str) -> dict[str, Any]:
            value = {"$cond": [{"$gt": [field, LATENCY_FLOOR_MS]}, field, LATENCY_FLOOR_MS]}
            return {"$floor": {"$add": [{"$multiply": [{"$log": [value, 2]}, LATENCY_BINS_PER_OCTAVE]}, 0.5]}}

        # One pass over the window: each $facet arm groups one stage.
        pipeline = [
            {"$match": self._faces(start, end, source)},
            {"$project": {"_id": 0, "latency_ms": 1}},
            {"$facet": {stage: [{"$group": {"_id": bin_of(f"$latency_ms.{stage}"), "n": {"$sum": 1}}}]
                        for stage in STAGES}},
        ]
        result = self._read(lambda c: list(c.aggregate(pipeline, allowDiskUse=True)))
        facets = result[0] if result else {}
        return [(stage, int(r["_id"]), int(r["n"])) for stage in STAGES for r in facets.get(stage, [])]

    def detection_counts(self, start: datetime | None, end: datetime | None,
                         source: str | None = None) -> list[DetectionRow]:
        match = {**self._window(start, end), **({"source": source} if source else {}),
                 "$or": [{"face_index": 0}, {"no_face": True}]}  # an image is its face 0 or its no-face doc
        pipeline = [
            {"$match": match},
            {"$group": {"_id": {"d": {"$dateToString": {"format": "%Y-%m-%d", "date": "$ts"}},
                                "s": "$source"},
                        "n": {"$sum": 1}, "nf": {"$sum": {"$cond": [{"$eq": ["$no_face", True]}, 1, 0]}}}},
        ]
        rows = self._read(lambda c: list(c.aggregate(pipeline)))
        return [(date.fromisoformat(r["_id"]["d"]), r["_id"]["s"], int(r["n"]), int(r["nf"])) for r in rows]

    def feedback_counts(self, start: datetime | None, end: datetime | None,
                        source: str | None = None) -> list[FeedbackRow]:
        match = {**self._faces(start, end, source), "feedback.label": {"$exists": True}}
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

    def unanswered(self, since: datetime | None, limit: int = 200) -> list[dict[str, Any]]:
        fields = {f: 1 for f in ("ts", "model_version", "image_sha256", "face_index", "box", "expression",
                                 "confidence", "probabilities", "source", "shadow")}

        def work(coll) -> list[dict[str, Any]]:
            query = {**self._window(since, None), "feedback": {"$exists": False},
                     "no_face": {"$ne": True}}  # a no-face document has no face to review
            docs = list(coll.find(query, fields).sort([("ts", -1), ("_id", -1)]).limit(int(limit)))
            shas = sorted({d["image_sha256"] for d in docs})
            answered = {(a["image_sha256"], a["face_index"]) for a in coll.find(
                {"image_sha256": {"$in": shas}, "feedback": {"$exists": True}},
                {"image_sha256": 1, "face_index": 1})}
            return [{**{k: v for k, v in d.items() if k != "_id"}, "id": str(d["_id"]), "ts": utc(d["ts"])}
                    for d in docs if (d["image_sha256"], d["face_index"]) not in answered]

        return self._read(work)


def _object_id(record_id: str):
    from bson import ObjectId
    from bson.errors import InvalidId

    try:
        return ObjectId(str(record_id))
    except InvalidId as exc:
        raise HistoryError(f"{record_id!r} is not a record id of the MongoDB history.") from exc
