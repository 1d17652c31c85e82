"""The history contract, the same on every backend: what is recorded, answers, bad input, outages."""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime, timedelta

import pytest

from facexpr.core.config import Settings
from facexpr.core.errors import LabelError
from facexpr.core.labels import EXPRESSIONS
from facexpr.storage.history import (
    BUFFER_FILE,
    EMBEDDED_FILE,
    HistoryBuffered,
    HistoryError,
    HistoryUnavailable,
    MongoHistory,
    SqliteHistory,
    feedback_safely,
    open_history,
    record_batch_safely,
    record_safely,
)
from tests.histories import FIXTURE, fake_prediction

DOC_FIELDS = {"id", "ts", "model_version", "image_sha256", "face_index", "box", "expression", "confidence",
              "probabilities", "latency_ms", "source"}


def test_one_document_per_face_with_the_agreed_fields(history):
    prediction = fake_prediction(faces=2)
    before = datetime.now(UTC)
    ids = history.record(prediction, "upload")
    assert len(ids) == 2 and len(set(ids)) == 2
    for i, record_id in enumerate(ids):
        doc = history.get(record_id)
        assert set(doc) == DOC_FIELDS
        face = prediction.faces[i]
        assert doc["face_index"] == i
        assert doc["box"] == face.box.as_list()
        assert doc["expression"] == face.expression
        assert doc["confidence"] == pytest.approx(face.confidence, abs=1e-6)
        assert set(doc["probabilities"]) == set(EXPRESSIONS)
        assert doc["probabilities"][face.expression] == pytest.approx(face.confidence, abs=1e-6)
        assert doc["latency_ms"] == {"decode": 1.5, "detect": 20.25, "classify": 3.0, "total": 24.75}
        assert doc["model_version"] == "m-test" and doc["image_sha256"] == "ab" * 32
        assert doc["source"] == "upload"
        assert doc["ts"].utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= doc["ts"] <= datetime.now(UTC) + timedelta(seconds=1)
    assert history.count() == 2


def test_an_image_with_no_face_is_one_no_face_document_not_a_face(history):
    ids = history.record(fake_prediction(faces=0), "cli")
    assert len(ids) == 1
    doc = history.get(ids[0])
    assert doc["no_face"] is True and doc["source"] == "cli" and doc["model_version"] == "m-test"
    assert doc["image_sha256"] == "ab" * 32 and doc["latency_ms"]["detect"] == 20.25
    assert not {"face_index", "box", "expression", "confidence", "probabilities", "feedback"} & set(doc)
    assert history.count() == 0  # faces only
    assert history.confidence_cube(None, None) == [] and history.latency_bins(None, None) == []
    with pytest.raises(HistoryError, match="No prediction record"):  # nobody answers a face not found
        history.attach_feedback(ids[0], "sad", False, None)


def test_feedback_is_attached_and_a_later_answer_replaces_it(history):
    record_id = history.record(fake_prediction(faces=1), "camera")[0]
    history.attach_feedback(record_id, "Sad ", False, "s3://bucket/relabeled/sad/x.png")
    fb = history.get(record_id)["feedback"]
    assert fb["label"] == "sad" and fb["confirmed"] is False
    assert fb["object_key"] == "s3://bucket/relabeled/sad/x.png"
    assert fb["ts"].utcoffset() == timedelta(0)
    history.attach_feedback(record_id, "happy", True, None)  # the person changed their mind
    fb = history.get(record_id)["feedback"]
    assert (fb["label"], fb["confirmed"], fb["object_key"]) == ("happy", True, None)


def test_two_people_answering_one_face_the_latest_answer_wins_in_any_order(history):
    record_id = history.record(fake_prediction(faces=1), "upload")[0]
    first, second = datetime(2026, 3, 1, 9, tzinfo=UTC), datetime(2026, 3, 1, 9, 5, tzinfo=UTC)
    history.attach_feedback(record_id, "angry", False, None, ts=second)
    history.attach_feedback(record_id, "sad", False, None, ts=first)  # the older answer arrives late
    fb = history.get(record_id)["feedback"]
    assert fb["label"] == "angry" and fb["ts"] == second


def test_bad_input_is_refused_with_a_clear_message(history):
    record_id = history.record(fake_prediction(faces=1), "upload")[0]
    with pytest.raises(LabelError, match="Unknown expression"):
        history.attach_feedback(record_id, "grumpy", False, None)
    with pytest.raises(HistoryError, match="Unknown source"):
        history.record(fake_prediction(faces=1), "fax")
    with pytest.raises(HistoryError, match="not a record id"):
        history.attach_feedback("no-such-id", "sad", False, None)
    assert history.count() == 1 and "feedback" not in history.get(record_id)


def test_feedback_for_a_missing_record_is_an_error(history):
    missing = "999999" if history.backend == "embedded" else "0123456789abcdef01234567"
    with pytest.raises(HistoryError, match="No prediction record"):
        history.attach_feedback(missing, "sad", False, None)


def test_windows_count_by_utc_time(history):
    history.insert_documents(FIXTURE)
    assert history.count() == len(FIXTURE)
    assert history.count(datetime(2026, 3, 8, 6, tzinfo=UTC), None) == 6
    # Naive and other-zone times mean the same instants.
    assert history.count(datetime(2026, 3, 9), datetime(2026, 3, 10)) == 2
    assert history.count(datetime(2026, 3, 9, 1, tzinfo=UTC), datetime(2026, 3, 9, 12, tzinfo=UTC)) == 1


def test_concurrent_sessions_lose_no_record(history):
    errors: list[BaseException] = []

    def session() -> None:
        try:
            for _ in range(5):
                history.record(fake_prediction(faces=2), "upload")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=session) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert history.count() == 40


def test_record_safely_returns_the_ids_and_answers_attach_to_them(history):
    prediction = fake_prediction(faces=2)
    ids, warning = record_safely(lambda: history, prediction, "upload")
    assert warning is None and len(ids) == 2
    assert history.count() == 2
    assert feedback_safely(lambda: history, ids[1], "fear", False, "relabeled/fear/x.png") is None
    answered = [d for d in (history.get(i) for i in ids) if "feedback" in d]
    assert [(d["face_index"], d["feedback"]["label"]) for d in answered] == [(1, "fear")]


def test_no_face_is_recorded_safely_as_a_no_face_document(history):
    ids, warning = record_safely(lambda: history, fake_prediction(faces=0), "upload")
    assert warning is None and len(ids) == 1 and history.get(ids[0])["no_face"] is True
    assert history.count() == 0


# ---------------------------------------------------------------- choosing a backend

def test_embedded_is_the_default_and_persists_under_the_data_dir(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    first = open_history(settings)
    assert isinstance(first, SqliteHistory) and first.backend == "embedded"
    record_id = first.record(fake_prediction(faces=1), "cli")[0]
    first.close()
    assert (tmp_path / "data" / EMBEDDED_FILE).is_file()
    again = open_history(settings)
    assert again.get(record_id)["source"] == "cli"
    indexes = {row[1] for row in again._db.execute("PRAGMA index_list(predictions)")}
    assert {"ix_predictions_ts", "ix_predictions_model_version"} <= indexes
    assert again._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_mongodb_uri_selects_mongodb_without_touching_the_network(tmp_path):
    settings = Settings(data_dir=tmp_path, mongodb_uri="mongodb://user:secret@127.0.0.1:9/?tls=false",
                        mongodb_db="fx")
    h = open_history(settings)
    assert isinstance(h, MongoHistory) and h.backend == "mongodb"
    assert "secret" not in h.location  # messages never show the password


def test_mongodb_indexes_on_ts_and_model_version(tmp_path):
    import mongomock

    client = mongomock.MongoClient(tz_aware=True)
    h = MongoHistory(client=client, db_name="fx", data_dir=tmp_path)
    h.record(fake_prediction(faces=1), "upload")
    keys = [[k for k, _ in ix["key"]] for ix in client["fx"]["predictions"].index_information().values()]
    assert ["ts"] in keys and ["model_version"] in keys


# ---------------------------------------------------------------- outages

def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def down_history(data_dir) -> MongoHistory:
    return MongoHistory(f"mongodb://127.0.0.1:{closed_port()}/?directConnection=true", "fx", data_dir,
                        timeout_ms=200)


def test_an_outage_keeps_records_and_answers_locally_then_delivers_them_once(tmp_path):
    import mongomock

    down = down_history(tmp_path)
    prediction = fake_prediction(faces=2)
    with pytest.raises(HistoryBuffered, match="unreachable") as caught:
        down.record(prediction, "upload")
    ids = caught.value.record_ids
    assert len(ids) == 2 and down.pending() == 1
    # Later writes do not wait on the dead server again; they queue behind the first.
    with pytest.raises(HistoryBuffered):
        down.attach_feedback(ids[1], "surprise", False, "relabeled/surprise/y.png")
    assert down.pending() == 2
    with pytest.raises(HistoryUnavailable, match="unreachable"):
        down.count()
    down.close()

    # The database is back (a new process: the outbox lives on disk under the data dir).
    assert (tmp_path / BUFFER_FILE).is_file()
    client = mongomock.MongoClient(tz_aware=True)
    back = MongoHistory(client=client, db_name="fx", data_dir=tmp_path)
    assert back.pending() == 2
    assert back.flush() == 2
    assert back.pending() == 0
    assert back.count() == 2
    assert back.get(ids[1])["feedback"]["label"] == "surprise"
    assert back.get(ids[0])["face_index"] == 0 and "feedback" not in back.get(ids[0])
    assert back.flush() == 0  # nothing twice


def test_a_delivery_retried_after_a_lost_reply_does_not_duplicate(tmp_path):
    import mongomock

    client = mongomock.MongoClient(tz_aware=True)
    h = MongoHistory(client=client, db_name="fx", data_dir=tmp_path)
    docs = [{"_id": __import__("bson").ObjectId(), **FIXTURE[0]}]
    h.buffer.append([("insert", {"docs": docs})])
    client["fx"]["predictions"].insert_one(dict(docs[0]))  # the first try got through, its reply was lost
    assert h.flush() == 1
    assert h.count() == 1 and h.pending() == 0


def test_buffered_records_show_up_in_reads_once_the_database_is_back(tmp_path):
    import mongomock

    with pytest.raises(HistoryBuffered):
        down_history(tmp_path).record(fake_prediction(faces=1), "upload")
    back = MongoHistory(client=mongomock.MongoClient(tz_aware=True), db_name="fx", data_dir=tmp_path)
    assert back.count() == 1  # reading flushes first
    assert back.pending() == 0


def test_record_safely_turns_an_outage_into_a_warning(tmp_path):
    down = down_history(tmp_path)
    prediction = fake_prediction(faces=1)
    ids, warning = record_safely(lambda: down, prediction, "upload")
    assert warning and "unreachable" in warning and "kept locally" in warning
    # The answer a person saves later is kept too, under the same record id.
    warning = feedback_safely(lambda: down, ids[0], "angry", False, "relabeled/angry/z.png")
    assert warning and "kept locally" in warning
    assert down.pending() == 2


class _RunStopped(BaseException):
    """What Streamlit raises in a page run it stopped, at its next session-state access."""


class _SessionState(dict):
    """Like st.session_state under fast reruns: a stopped run's thread cannot touch it."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped: set[int] = set()

    def _check(self) -> None:
        if threading.get_ident() in self.stopped:
            raise _RunStopped

    def get(self, key, default=None):
        self._check()
        return super().get(key, default)

    def __setitem__(self, key, value) -> None:
        self._check()
        super().__setitem__(key, value)


def test_a_rerun_during_a_slow_write_does_not_record_the_prediction_twice(tmp_path, monkeypatch):
    """Streamlit's fast reruns start the next page run (here: the person's click) while the last one
    still waits on an unreachable database, and stop the old one at its next session-state access;
    the prediction is still recorded once, and the answer attached to that record."""
    from facexpr.app import ui
    from facexpr.storage.relabel import SaveResult

    entered = threading.Event()
    state = _SessionState()

    class Slow(MongoHistory):
        def record(self, *args, **kwargs):
            if not entered.is_set():
                state.stopped.add(threading.get_ident())  # the click arrives: this run is stopped
                entered.set()
            return super().record(*args, **kwargs)

    down = Slow(f"mongodb://127.0.0.1:{closed_port()}/?directConnection=true", "fx", tmp_path, timeout_ms=500)
    monkeypatch.setattr(ui.st, "session_state", state)
    monkeypatch.setattr(ui, "get_history", lambda: down)
    prediction = fake_prediction(faces=1)
    first = threading.Thread(target=lambda: ui.record_once(prediction, "upload"))
    first.start()
    entered.wait(10)
    saved = SaveResult(label="fear", predicted=prediction.faces[0].expression, key="fear/x.png",
                       location=str(tmp_path / "x.png"), sha256="0" * 64, saved_at="2026-03-01T09:00:00Z")
    ui.note_answer(prediction, 0, saved, "upload")  # the click's run
    first.join()
    ops = [(op, payload) for _, op, payload in down.buffer.items()]
    assert [op for op, _ in ops] == ["insert", "feedback"]
    assert ops[1][1]["_id"] == ops[0][1]["docs"][0]["_id"]


def test_a_broken_uri_is_a_message_naming_the_setting(tmp_path):
    h = MongoHistory("mongodb://[not-a-host", "fx", tmp_path)
    _, warning = record_safely(lambda: h, fake_prediction(faces=1), "upload")
    assert "FACEXPR_MONGODB_URI" in warning
    assert h.pending() == 1  # still kept


def test_embedded_store_that_cannot_be_opened_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(HistoryError, match="cannot be opened"):
        SqliteHistory(tmp_path / "file" / EMBEDDED_FILE)


def test_record_safely_never_raises(tmp_path):
    class Broken:
        def record(self, prediction, source):
            raise RuntimeError("disk on fire")

        def insert_documents(self, docs):
            raise RuntimeError("disk on fire")

    ids, warning = record_safely(lambda: Broken(), fake_prediction(faces=1), "upload")
    assert ids is None and "disk on fire" in warning
    assert "disk on fire" in record_batch_safely(lambda: Broken(), [fake_prediction(faces=1)], "batch")[1]


def test_a_history_that_cannot_be_opened_is_a_warning_too():
    def cannot_open():
        raise HistoryError("The embedded history /nowhere cannot be opened: read-only file system")

    assert "read-only" in record_safely(cannot_open, fake_prediction(faces=1), "upload")[1]
    assert "read-only" in record_batch_safely(cannot_open, [fake_prediction(faces=1)], "batch")[1]
    assert "read-only" in feedback_safely(cannot_open, "1", "sad", False, None)


def test_embedded_history_works_when_tensorflow_loaded_sqlite_first(tmp_path):
    """TensorFlow, imported by the app before any history, brings a libsqlite3 without floor/log2.
    A fresh process is needed: in this one, sqlite3 was loaded first."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = (
        "import tensorflow, sys\n"
        "from datetime import datetime, UTC\n"
        "from facexpr.core.config import Settings\n"
        "from facexpr.storage.history import open_history\n"
        "from facexpr.core.labels import EXPRESSIONS\n"
        "h = open_history(Settings(data_dir=sys.argv[1]))\n"
        "h.insert_documents([{'ts': datetime.now(UTC), 'model_version': 'm', 'image_sha256': 'x',"
        " 'face_index': 0,"
        " 'box': [0, 0, 48, 48], 'expression': 'happy', 'confidence': 0.9,"
        " 'probabilities': dict.fromkeys(EXPRESSIONS, 1 / 7),"
        " 'latency_ms': {'decode': 1, 'detect': 2, 'classify': 3, 'total': 6}, 'source': 'cli'}])\n"
        "print(h.count(), len(h.latency_bins(None, None)))\n"
    )
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                         cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[0] == "1"
