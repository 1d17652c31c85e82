"""What mongomock cannot show, on a real MongoDB-wire server (secantusd-py on loopback).

The server stops while predictions and answers are written and comes back on the same port with
its data: everything kept locally arrives exactly once. Two OS processes write to one database at
once: no record is lost or doubled, and when both answer the same face the latest answer wins.
The browser version of the outage is tests/test_e2e_mongo_wire.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from facexpr.storage.history import HistoryBuffered, HistoryUnavailable, MongoHistory
from tests.histories import fake_prediction
from tests.mongo_wire import ROOT, ping, require_server, wire_server

PER_PROCESS = 15  # predictions of two faces each


def test_the_session_server_answers_a_ping(mongo_wire):
    assert ping(mongo_wire.uri)


def test_without_the_server_ci_fails_and_a_laptop_skips(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI needs the MongoDB-wire server"):
        require_server(None)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no MongoDB-wire server"):
        require_server(None)


def test_a_server_restart_delivers_what_was_kept_locally_exactly_once(tmp_path):
    with wire_server(tmp_path / "server") as server:
        h = MongoHistory(server.uri, "fx", tmp_path / "data", timeout_ms=500)
        before = h.record(fake_prediction(faces=1), "upload")[0]
        assert h.count() == 1 and h.pending() == 0

        server.stop()  # mid-session, as a crashed or restarted mongod
        with pytest.raises(HistoryBuffered, match="unreachable") as caught:
            h.record(fake_prediction(faces=2, model="m-during"), "camera")
        during = caught.value.record_ids
        with pytest.raises(HistoryBuffered):
            h.attach_feedback(during[1], "fear", False, "relabeled/fear/x.png")
        with pytest.raises(HistoryBuffered):
            h.attach_feedback(before, "happy", True, None)
        assert h.pending() == 3
        with pytest.raises(HistoryUnavailable):
            h.count()

        server.start()  # the same port, the same data folder
        assert h.flush() == 3 and h.pending() == 0
        assert h.flush() == 0
        assert h.count() == 3  # one before, two faces during: nothing doubled
        assert h.get(during[1])["feedback"]["label"] == "fear"
        assert "feedback" not in h.get(during[0])
        assert h.get(before)["feedback"]["confirmed"] is True
        h.close()

        # A new process (a restarted app) finds nothing left to send.
        again = MongoHistory(server.uri, "fx", tmp_path / "data")
        assert again.pending() == 0 and again.count() == 3
        again.close()


def _write_from_another_process() -> None:
    """Run in a fresh interpreter (see below): waits for the start file, writes, prints the ids."""
    uri, db, data_dir, shared_id, label, answered_at, start_file = sys.argv[1:]
    while not Path(start_file).exists():  # both processes write at once
        time.sleep(0.01)
    h = MongoHistory(uri, db, data_dir)
    ids = []
    try:
        for i in range(PER_PROCESS):
            new = h.record(fake_prediction(faces=2, model=f"m-{label}"), "upload")
            h.attach_feedback(new[i % 2], label, False, f"relabeled/{label}/{i}.png")
            ids += new
        h.attach_feedback(shared_id, label, False, None, ts=datetime.fromisoformat(answered_at))
    finally:
        h.close()
    print(json.dumps(ids))


def test_two_processes_write_to_one_database_without_losing_or_doubling(mongo_wire, tmp_path):
    db = f"fx_{uuid.uuid4().hex[:8]}"
    h = MongoHistory(mongo_wire.uri, db, tmp_path / "parent")
    shared = h.record(fake_prediction(faces=1), "upload")[0]  # one face both people answer
    now = datetime.now(UTC)
    start = tmp_path / "start"
    # Two fresh interpreters, each with its own data folder (and so its own buffer), as two app hosts.
    workers = [subprocess.Popen(
        [sys.executable, "-c", "from tests.test_mongo_wire import _write_from_another_process as w; w()",
         mongo_wire.uri, db, str(tmp_path / label), shared, label, (now + timedelta(seconds=s)).isoformat(),
         str(start)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        text=True)
        for label, s in (("sad", 1), ("angry", 2))]
    start.touch()
    written = []
    for worker in workers:
        out, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0
        written.append(json.loads(out.strip().splitlines()[-1]))
    try:
        ids = [i for chunk in written for i in chunk]
        assert len(ids) == len(set(ids)) == 2 * 2 * PER_PROCESS
        assert h.count() == len(ids) + 1
        answers: dict[tuple[str, str], int] = {}
        for _, model, _, label, _, n in h.feedback_counts(None, None):
            answers[model, label] = answers.get((model, label), 0) + n
        assert answers[("m-sad", "sad")] == PER_PROCESS and answers[("m-angry", "angry")] == PER_PROCESS
        assert h.get(shared)["feedback"]["label"] == "angry"  # the later answer, whichever landed last
    finally:
        h._client.drop_database(db)
        h.close()
