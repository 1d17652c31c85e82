"""Twenty people at once: each gets the answer for their own photo, and the model loads once.

Streamlit serves every session from threads of one process, sharing `st.cache_resource` values,
so these tests run sessions in threads against one cached classifier, as the server does.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from facexpr.app.ui import widget_named
from facexpr.model.predict import predict_image
from tests.conftest import FIXTURES, ROOT, image_bytes

SESSIONS = 20
PAGE = str(ROOT / "pages" / "classify.py")


def twenty_photos() -> list[bytes]:
    """Twenty different pictures: the photo cropped, mirrored, shifted, darkened, plus ready crops."""
    photo = np.asarray(Image.open(FIXTURES / "astronaut.jpg").convert("L"))
    rng = np.random.default_rng(20)
    photos = []
    for i in range(SESSIONS):
        if i % 4 == 3:  # a ready 48×48 crop: skips detection, so each gives a distinct answer
            photos.append(image_bytes(rng.integers(0, 256, (48, 48), dtype=np.uint8)))
            continue
        x, y = 10 * (i % 5), 8 * (i % 3)
        img = photo[y:y + 440, x:x + 440]
        if i % 2:
            img = img[:, ::-1]
        img = np.clip(img.astype(int) - 6 * i, 0, 255).astype(np.uint8)
        photos.append(image_bytes(img, "JPEG" if i % 3 else "PNG"))
    assert len(set(photos)) == SESSIONS
    return photos


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    return twenty_photos()


def test_twenty_threads_on_one_classifier_get_their_own_answers(tiny_classifier, photos):
    alone = [predict_image(p, tiny_classifier) for p in photos]
    barrier = threading.Barrier(SESSIONS)

    def session(data: bytes):
        barrier.wait()  # all twenty start together
        return predict_image(data, tiny_classifier)

    with ThreadPoolExecutor(SESSIONS) as pool:
        together = list(pool.map(session, photos))
    for i, (a, b) in enumerate(zip(alone, together, strict=True)):
        assert b.image_sha256 == a.image_sha256, f"session {i} got another photo's answer"
        assert [f.box for f in b.faces] == [f.box for f in a.faces]
        assert len(b.faces) >= 1
        np.testing.assert_allclose(np.stack([f.probabilities for f in b.faces]),
                                   np.stack([f.probabilities for f in a.faces]), atol=1e-5)
    # The answers really differ between photos: a mix-up between sessions would show.
    assert len({round(float(p.faces[0].probabilities.max()), 6) for p in alone}) > SESSIONS // 2


def test_twenty_sessions_starting_cold_load_the_model_once(monkeypatch, use_tiny_model, photos):
    """Twenty sessions ask the page's cached classifier for their answers at the same moment on a
    fresh process: one loads the model, the others wait for it, and each answer is its own."""
    import facexpr.app.ui as ui

    loads: list[str | None] = []
    real_load = ui.load_classifier

    def slow_counting_load(path=None):
        loads.append(path)
        time.sleep(0.5)  # a real model takes seconds: give every session time to ask meanwhile
        return real_load(path)

    expected = [predict_image(p, real_load(str(use_tiny_model))) for p in photos]
    monkeypatch.setattr(ui, "load_classifier", slow_counting_load)
    ui.get_classifier.clear()  # start cold, as a fresh server process does
    barrier = threading.Barrier(SESSIONS)

    def session(i: int):
        barrier.wait()
        return predict_image(photos[i], ui.served_classifier())

    try:
        with ThreadPoolExecutor(SESSIONS) as pool:
            together = list(pool.map(session, range(SESSIONS)))
        assert loads == [str(use_tiny_model)], f"the model was loaded {len(loads)} times"
        for i, (a, b) in enumerate(zip(expected, together, strict=True)):
            assert [f.expression for f in b.faces] == [f.expression for f in a.faces], f"session {i}"
            np.testing.assert_allclose(b.faces[0].probabilities, a.faces[0].probabilities, atol=1e-5)
    finally:
        ui.get_classifier.clear()  # the counting wrapper must not outlive this test


def test_a_rerun_does_not_reload_or_reclassify(monkeypatch, use_tiny_model, astronaut_bytes):
    import facexpr.app.ui as ui
    from facexpr.model.classifier import Classifier

    calls = {"load": 0, "classify": 0}
    real_load, real_classify = ui.load_classifier, Classifier.predict

    def counting_load(path=None):
        calls["load"] += 1
        return real_load(path)

    def counting_classify(self, crops, *args, **kwargs):
        calls["classify"] += int(np.asarray(crops).any())  # the loader's warm-up feeds zeros: not a request
        return real_classify(self, crops, *args, **kwargs)

    monkeypatch.setattr(ui, "load_classifier", counting_load)
    monkeypatch.setattr(Classifier, "predict", counting_classify)
    ui.get_classifier.clear()
    try:
        at = AppTest.from_file(PAGE, default_timeout=60).run()
        at.file_uploader(key="upload").set_value(("a.jpg", astronaut_bytes, "image/jpeg")).run()
        label = at.subheader[0].value
        # Widget reruns: choosing another label, and a plain rerun.
        other = "neutral" if label.lower() != "neutral" else "sad"
        widget_named(at.selectbox, "relabel_label").select(other).run()
        at.run()
        assert not at.exception and at.subheader[0].value == label
        assert calls == {"load": 1, "classify": 1}
    finally:
        ui.get_classifier.clear()
