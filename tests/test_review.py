"""The review queue: unanswered faces on every history backend, most useful first, labelled through
the relabel path — as functions, and on the page through AppTest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from facexpr.app.review import keep_for_review, label_item, review_queue, review_uri, sweep
from facexpr.app.ui import widget_named
from facexpr.core.config import load_settings
from facexpr.core.labels import EXPRESSIONS, INDEX
from facexpr.core.types import Box, FaceResult, Prediction
from facexpr.storage.history import EMBEDDED_FILE, SqliteHistory
from facexpr.storage.store import open_store
from tests.conftest import ROOT
from tests.histories import NOW

PAGE = str(ROOT / "pages" / "review.py")


def answer(sha: str, expression: str, confidence: float, model: str = "m2", faces: int = 1) -> Prediction:
    rest = (1 - confidence) / 6
    probs = np.array([confidence if e == expression else rest for e in EXPRESSIONS], np.float32)
    crop = np.full((48, 48), 40 + 20 * INDEX[expression], np.uint8)
    return Prediction(image_sha256=sha * 32, gray=np.zeros((96, 96), np.uint8),
                      faces=[FaceResult(Box(10, 10, 40, 40), crop, probs) for _ in range(faces)],
                      mode="detect", model_version=model, latency_ms=dict.fromkeys(
                          ("decode", "detect", "classify", "total"), 1.0))


def seed(store_history, settings) -> dict[str, list[str]]:
    """Six faces; the queue should hold four, in the order c, b, a... (see the test)."""
    when = NOW - timedelta(hours=5)
    ids = {}
    made = {
        "a": [("happy", 0.90, "m2")],  # confident
        "b": [("sad", 0.30, "m2")],  # unsure
        "c": [("fear", 0.50, "m1"), ("angry", 0.60, "m2")],  # the two latest versions disagree
        "d": [("sad", 0.20, "m2")],  # answered below
        "e": [("happy", 0.10, "m1"), ("happy", 0.15, "m2")],  # one of its records is answered below
        "f": [("neutral", 0.05, "m2")],  # no crop kept: never shown
    }
    for step, (sha, answers) in enumerate(made.items()):
        for k, (expression, confidence, model) in enumerate(answers):
            prediction = answer(sha, expression, confidence, model)
            at = when + timedelta(minutes=step * 3 + k)
            ids.setdefault(sha, []).extend(store_history.record(prediction, "upload", at))
            if sha != "f":
                keep_for_review(settings, prediction)
    store_history.record(answer("g", "happy", 0.1, faces=0), "upload", when)  # no face: nothing to review
    store_history.attach_feedback(ids["d"][0], "sad", True, None)
    store_history.attach_feedback(ids["e"][0], "happy", True, None)
    return ids


def test_queue_order_on_every_backend(history):
    settings = load_settings()
    ids = seed(history, settings)
    queue = review_queue(history, settings, now=NOW)
    assert [q.image_sha256[:1] for q in queue] == ["c", "b", "a"]
    assert queue[0].other == ("m1", "fear") and queue[0].model_version == "m2"  # the newest record shown
    assert queue[0].record_id == ids["c"][1] and queue[1].confidence == pytest.approx(0.3)
    assert queue[1].photo_key and queue[1].probabilities.argmax() == INDEX["sad"]
    assert review_queue(history, settings, now=NOW + timedelta(days=31)) == []  # older than the window


def test_labelling_goes_through_the_relabel_path(history):
    settings = load_settings()
    seed(history, settings)
    item = review_queue(history, settings, now=NOW)[1]  # b: sad at 30 %
    saved, warning = label_item(settings, history, item, "fear")
    assert warning is None and not saved.queued and saved.label == "fear" and not saved.confirmed
    relabeled = open_store(settings.relabeled_uri)
    assert relabeled.list_keys() == [saved.key] and saved.key.startswith("fear/")
    assert relabeled.metadata(saved.key)["predicted-expression"] == "sad"
    assert open_store(str(settings.data_dir / "originals")).list_keys() == []  # the upload was never kept
    assert history.get(item.record_id)["feedback"]["label"] == "fear"
    assert [q.image_sha256[:1] for q in review_queue(history, settings, now=NOW)] == ["c", "a"]
    review = open_store(review_uri(settings)).list_keys()
    assert not [k for k in review if k.startswith("b" * 64)]  # nothing kept once answered


def test_review_page_labels_one_face_per_click():
    settings = load_settings()
    embedded = SqliteHistory(settings.data_dir / EMBEDDED_FILE)
    now = datetime.now(UTC)
    for step, (sha, expression, confidence) in enumerate((("a", "happy", 0.9), ("b", "sad", 0.3))):
        prediction = answer(sha, expression, confidence)
        embedded.record(prediction, "upload", now - timedelta(minutes=10 - step))
        keep_for_review(settings, prediction)
    embedded.close()

    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert at.subheader[0].value == "Sad" and "30%" in at.markdown[1].value  # the unsure one first
    assert len(at.get("image")) == 2 and len(at.get("vega_lite_chart")) == 1
    first_keys = {b.key for b in at.button}
    widget_named(at.button, "review_label_disgust").click().run()
    assert not at.exception and "Saved as disgust" in at.success[0].value
    assert at.subheader[0].value == "Happy"  # the next one
    assert not first_keys & {b.key for b in at.button}  # its own buttons: no highlight carries over
    # A mistyped key: the last answer can be changed, and the crop moves (one face, one label).
    widget_named(at.selectbox, "review_change").set_value("fear").run()
    widget_named(at.button, "review_change_save").click().run()
    assert not at.exception and "Saved as fear" in at.success[0].value
    assert at.subheader[0].value == "Happy"  # the queue did not move
    widget_named(at.button, "review_label_happy").click().run()
    assert "Confirmed" in at.success[0].value and "Nothing to review" in at.info[0].value
    stored = sorted(open_store(settings.relabeled_uri).list_keys())
    assert [k.split("/")[0] for k in stored] == ["fear", "happy"]
    embedded = SqliteHistory(settings.data_dir / EMBEDDED_FILE)
    assert sorted(r[3] for r in embedded.feedback_counts(None, None)) == ["fear", "happy"]
    embedded.close()


def test_classify_keeps_the_answer_for_review(use_tiny_model, astronaut_bytes):
    at = AppTest.from_file(str(ROOT / "pages" / "classify.py"), default_timeout=60).run()
    at.file_uploader(key="upload").set_value(("a.jpg", astronaut_bytes, "image/jpeg"))
    at.run()
    assert not at.exception
    keys = open_store(review_uri(load_settings())).list_keys()
    assert len(keys) == 2 and any(k.endswith("/face-0.png") for k in keys)
    assert any("/photo." in k for k in keys)


def test_nothing_stays_for_review_past_the_window(astronaut_bytes):
    settings = load_settings()
    keep_for_review(settings, answer("a", "happy", 0.9, faces=2))
    store = open_store(review_uri(settings))
    assert len(store.list_keys()) == 3  # two crops and the photo
    assert sweep(settings) == 0 and len(store.list_keys()) == 3  # young: kept
    assert sweep(settings, now=datetime.now(UTC) + timedelta(days=31)) == 3
    assert store.list_keys() == []


def test_the_review_photo_is_small_and_its_box_scaled():
    from facexpr.app.review import PHOTO_SIDE, load_photo

    settings = load_settings()
    prediction = answer("a", "happy", 0.9)
    prediction.gray = np.zeros((960, 640), np.uint8)  # twice the review copy's size
    history = SqliteHistory(settings.data_dir / EMBEDDED_FILE)
    history.record(prediction, "upload")
    keep_for_review(settings, prediction)
    item = review_queue(history, settings)[0]
    data, box = load_photo(settings, item)
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as photo:
        assert max(photo.size) == PHOTO_SIDE and photo.size == (213, 320)
    assert box == [round(v * 213 / 640) for v in (10, 10, 40, 40)]
    history.close()
