"""One face, one label: the latest answer to a face wins, the older object is removed, and every
answer stays in the history: across sessions, processes and the outbox, on S3 and the local store."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from facexpr.core.config import Settings, load_settings
from facexpr.photo.imaging import encode_png
from facexpr.storage.relabel import flush_outbox, outbox_for, save_crop
from tests.conftest import ROOT
from tests.test_relabel import make_crop, make_prediction, stored

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["local", "s3"])
def backend(request) -> Settings:
    if request.param == "s3":
        request.getfixturevalue("s3")
    return load_settings()


def crops_of(settings: Settings, crop: np.ndarray) -> list[str]:
    """The labels under which this crop is stored now."""
    import hashlib

    name = hashlib.sha256(encode_png(crop)).hexdigest() + ".png"
    return sorted(k.split("/")[-2] for k in stored(settings)
                  if k.startswith("relabeled/") and k.endswith(name))


def answer(settings: Settings, crop: np.ndarray, label: str, when: datetime, **kw):
    """One person's answer, given in its own session (it knows nothing of the others' saves)."""
    return save_crop(settings, crop, label, predicted="happy", confidence=0.7, model_version="model-v1",
                     now=when, **kw)


def test_a_second_session_moves_the_face_to_its_label(backend):
    crop = make_crop(31)
    answer(backend, crop, "sad", T0)
    answer(backend, crop, "angry", T0 + timedelta(minutes=5))  # another session: no `replaces`
    assert crops_of(backend, crop) == ["angry"]
    answer(backend, crop, "sad", T0 + timedelta(minutes=9))  # and back: the latest still wins
    assert crops_of(backend, crop) == ["sad"]


def test_answers_within_one_second_keep_their_order(backend):
    crop = make_crop(32)
    answer(backend, crop, "fear", T0 + timedelta(microseconds=800))
    answer(backend, crop, "disgust", T0 + timedelta(microseconds=900))
    assert crops_of(backend, crop) == ["disgust"]


def test_a_late_write_of_an_older_answer_does_not_win(backend):
    """The older answer reaches the store last (a slow request): it removes itself, not the newer one."""
    crop = make_crop(33)
    answer(backend, crop, "angry", T0 + timedelta(minutes=5))
    answer(backend, crop, "sad", T0)
    assert crops_of(backend, crop) == ["angry"]


def test_racing_sessions_converge_on_the_latest_answer(backend):
    labels = ["angry", "fear", "sad", "surprise", "neutral"]
    for round_ in range(6):
        crop = make_crop(100 + round_)
        start = threading.Barrier(len(labels))
        errors: list[BaseException] = []

        def session(n: int, label: str, crop=crop, start=start, errors=errors) -> None:
            try:
                start.wait()
                answer(backend, crop, label, T0 + timedelta(seconds=n))
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=session, args=(n, label)) for n, label in enumerate(labels)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert crops_of(backend, crop) == [labels[-1]], f"round {round_}"


SAVE_IN_A_PROCESS = """
import sys, datetime, numpy as np
from facexpr.core.config import load_settings
from facexpr.storage.relabel import save_crop
crop = np.frombuffer(bytes.fromhex(sys.argv[1]), np.uint8).reshape(48, 48)
when = datetime.datetime.fromisoformat(sys.argv[3])
save_crop(load_settings(), crop, sys.argv[2], predicted="happy", confidence=0.7, model_version="model-v1",
          now=when)
"""


def test_two_processes_answering_one_face_leave_the_latest(backend):
    crop = make_crop(41)
    env_keys = ("FACEXPR_DATA_DIR", "FACEXPR_S3_BUCKET", "FACEXPR_S3_PREFIX", "AWS_ENDPOINT_URL",
                "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    import os

    env = {k: os.environ[k] for k in env_keys if k in os.environ} | {"PYTHONPATH": str(ROOT),
                                                                      "PATH": os.environ["PATH"]}
    procs = [subprocess.Popen([sys.executable, "-c", SAVE_IN_A_PROCESS, crop.tobytes().hex(), label,
                               (T0 + timedelta(seconds=n)).isoformat()], env=env, cwd=ROOT)
             for n, label in enumerate(["happy", "surprise", "sad"])]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert crops_of(backend, crop) == ["sad"]


def test_a_queued_older_answer_synced_after_a_newer_one_is_dropped(s3, tmp_path):
    """Machine A queues *sad* while S3 is down; machine B (its own outbox) answers *angry* later
    and S3 takes it; A's `sync` delivers sad afterwards: angry stays, sad is gone."""
    settings = load_settings()
    crop = make_crop(51)
    s3.endpoint.stop()
    queued = answer(settings, crop, "sad", T0)
    assert queued.queued
    s3.endpoint.start()
    machine_b = Settings(**{**settings.__dict__, "data_dir": tmp_path / "machine-b"})
    answer(machine_b, crop, "angry", T0 + timedelta(minutes=1))
    report = flush_outbox(settings)
    assert report.ok, report.errors
    assert crops_of(settings, crop) == ["angry"]


def test_a_newer_answer_drops_an_older_one_waiting_in_the_same_outbox(backend):
    crop = make_crop(52)
    outbox = outbox_for(backend)
    # An older answer to this face that could not be delivered yet (e.g. S3 was down then).
    outbox.add("relabeled", "put", "sad/" + crops_key(crop), encode_png(crop),
               {"saved-at": T0.isoformat(), "label": "sad"}, reason="down")
    answer(backend, crop, "angry", T0 + timedelta(minutes=1))
    assert len(outbox) == 0  # nothing stale left to upload
    assert flush_outbox(backend).ok
    assert crops_of(backend, crop) == ["angry"]


def crops_key(crop: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(encode_png(crop)).hexdigest() + ".png"


def test_a_queued_delete_does_not_remove_a_later_answer(s3, tmp_path):
    """A changes sad → angry while S3 is down (a put and a delete queued); B answers *sad* again
    later; A's sync must not delete B's sad, and angry (older than B's sad) goes."""
    settings = load_settings()
    crop = make_crop(53)
    first = answer(settings, crop, "sad", T0)
    s3.endpoint.stop()
    answer(settings, crop, "angry", T0 + timedelta(minutes=1), replaces=first)
    s3.endpoint.start()
    machine_b = Settings(**{**settings.__dict__, "data_dir": tmp_path / "machine-b"})
    answer(machine_b, crop, "sad", T0 + timedelta(minutes=2))
    assert flush_outbox(settings).ok
    assert crops_of(settings, crop) == ["sad"]


def test_every_answer_stays_in_the_history_across_two_sessions(use_tiny_model):
    """Two browser sessions correct the same photo's face, to sad and then to angry: one object,
    under angry; the history keeps both answers (one record per session's prediction)."""
    from streamlit.testing.v1 import AppTest

    from facexpr.app.ui import widget_named
    from facexpr.storage.history import EMBEDDED_FILE, SqliteHistory
    from tests.conftest import image_bytes

    upload = image_bytes(make_crop(61))
    for label in ("sad", "angry"):
        at = AppTest.from_file(str(ROOT / "pages" / "classify.py"), default_timeout=120)
        at.run()
        at.file_uploader(key="upload").set_value(("face.png", upload, "image/png")).run()
        widget_named(at.selectbox, "relabel_label").set_value(label).run()
        widget_named(at.button, "relabel_save").click().run()
        assert not at.exception and at.success, [w.value for w in at.warning]
    settings = load_settings()
    assert crops_of(settings, make_crop(61)) == ["angry"]
    history = SqliteHistory(Path(settings.data_dir) / EMBEDDED_FILE)
    try:
        feedback = [history.get(str(i))["feedback"]["label"] for i in (1, 2)]
    finally:
        history.close()
    assert feedback == ["sad", "angry"]
    meta = json.loads(next((Path(settings.data_dir) / "relabeled" / "angry").glob("*.meta.json")).read_text())
    assert meta["label"] == "angry"


def test_prediction_helper_is_the_page_path(backend):
    """save_relabel (the page's call) takes the same rule: the face of a prediction, two sessions."""
    from facexpr.storage.relabel import save_relabel

    crop = make_crop(71)
    prediction = make_prediction([crop])
    save_relabel(backend, prediction, 0, "sad", now=T0)
    save_relabel(backend, prediction, 0, "neutral", now=T0 + timedelta(seconds=1))
    assert crops_of(backend, crop) == ["neutral"]
