"""The classify page driven by its widget keys (Streamlit AppTest, no browser)."""

import io

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, image_bytes

PAGE = str(ROOT / "pages" / "classify.py")


@pytest.fixture
def page(use_tiny_model):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    return at


def upload(at: AppTest, name: str, data: bytes, mime: str = "image/jpeg") -> AppTest:
    at.file_uploader(key="upload").set_value((name, data, mime))
    return at.run()


def test_empty_page_invites_an_upload(page):
    assert not page.exception
    assert "Choose a photo" in page.info[0].value


def test_upload_shows_image_label_and_chart(page, astronaut_bytes):
    upload(page, "astronaut.jpg", astronaut_bytes)
    assert not page.exception and not page.error
    from facexpr.core.labels import EXPRESSIONS

    assert page.subheader[0].value.lower() in EXPRESSIONS
    assert "confidence" in page.markdown[0].value
    charts = page.get("vega_lite_chart")
    assert len(charts) == 1
    assert len(page.get("image")) == 2  # the marked photo and the 48×48 crop


def test_bad_file_gets_an_error_not_a_traceback(page):
    upload(page, "notes.png", b"hello, not a picture", "image/png")
    assert not page.exception
    assert "notes.png" in page.error[0].value and "not an image" in page.error[0].value


def test_no_face_offers_the_whole_image(page, blank_photo_bytes):
    upload(page, "wall.png", blank_photo_bytes, "image/png")
    assert "No face was found" in page.warning[0].value
    page.button(key="classify_whole").click().run()
    assert not page.exception
    assert "centre of the whole image" in page.info[0].value
    assert len(page.subheader) == 1


def test_two_faces_get_two_answers(page, two_faces_bytes):
    upload(page, "pair.png", two_faces_bytes, "image/png")
    assert not page.exception
    assert [s.value.split(":")[0] for s in page.subheader] == ["Face 1", "Face 2"]


def test_camera_photo_is_answered_and_recorded_as_camera(page, astronaut_bytes):
    page.toggle(key="use_camera").set_value(True).run()
    assert "Take a photo" in page.info[0].value
    page.camera_input(key="camera").set_value(("photo.jpg", astronaut_bytes, "image/jpeg"))
    page.run()
    assert not page.exception and len(page.subheader) == 1

    import hashlib

    from facexpr.core.config import load_settings
    from facexpr.storage.history import open_history

    memo_key = f"_history_ids:{hashlib.sha256(astronaut_bytes).hexdigest()}:detect:tiny-test:camera"
    (record_id,) = page.session_state[memo_key]
    doc = open_history(load_settings()).get(record_id)
    assert doc["source"] == "camera"


def test_heatmap_appears_only_when_asked(page, astronaut_bytes):
    from facexpr.app.ui import widget_named

    upload(page, "astronaut.jpg", astronaut_bytes)
    assert len(page.get("image")) == 2
    widget_named(page.toggle, "explain").set_value(True).run()
    assert not page.exception
    assert len(page.get("image")) == 3 and "Grad-CAM" in page.get("image")[2].proto.imgs[0].caption


def test_the_heatmap_switch_belongs_to_one_answer(page, astronaut_bytes):
    """Switched on for one photo, it is off for the next: the next photo shows no heatmap until asked."""
    from facexpr.app.ui import widget_named

    upload(page, "astronaut.jpg", astronaut_bytes)
    widget_named(page.toggle, "explain").set_value(True).run()
    assert len(page.get("image")) == 3
    mirrored = np.asarray(Image.open(io.BytesIO(astronaut_bytes)).convert("L"))[:, ::-1]
    upload(page, "mirrored.png", image_bytes(mirrored), "image/png")
    assert not page.exception
    assert widget_named(page.toggle, "explain").value is False
    assert len(page.get("image")) == 2  # the marked photo and its crop, no heatmap


def test_reruns_record_once_and_an_answer_attaches_to_that_record(page, astronaut_bytes):
    from facexpr.app.ui import widget_named
    from facexpr.core.config import load_settings
    from facexpr.storage.history import open_history

    upload(page, "astronaut.jpg", astronaut_bytes)
    widget_named(page.toggle, "explain").set_value(True).run()  # widget reruns of the same answer
    widget_named(page.button, "relabel_save").click().run()
    assert not page.exception
    history = open_history(load_settings())
    assert history.count() == 1
    doc = history.get("1")  # the embedded store's first record
    assert doc["source"] == "upload" and doc["feedback"]["confirmed"] is True
    assert doc["feedback"]["label"] == doc["expression"]


def test_the_limits_are_said_where_the_photo_is_chosen(page):
    limits = page.caption[1].value
    assert "JPEG, PNG, WebP, BMP, TIFF or GIF" in limits
    assert "20 MB" in limits and "40 megapixels" in limits  # .streamlit/config.toml and imaging.MAX_PIXELS


def test_a_drawing_gets_its_reason_on_the_page(page):
    svg = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
           b'<circle cx="32" cy="32" r="30" fill="gray"/></svg>')
    upload(page, "face.svg", svg, "image/svg+xml")
    assert not page.exception
    [error] = page.error
    assert error.value.startswith("face.svg: ")
    assert "SVG file is a drawing" in error.value and "JPEG" in error.value


def test_a_tiny_image_is_too_small_to_trust_and_not_confirmed_unasked(page):
    import numpy as np

    from facexpr.app.ui import widget_named
    from tests.conftest import image_bytes

    noise = np.random.default_rng(3).integers(0, 256, (16, 12), dtype=np.uint8)  # 12 wide, 16 high
    upload(page, "noise.png", image_bytes(noise), "image/png")
    assert not page.exception
    assert any("Too small to trust" in w.value and "12×16" in w.value for w in page.warning)
    chooser, save = widget_named(page.selectbox, "relabel_label"), widget_named(page.button, "relabel_save")
    assert chooser.value is None  # not preset to the answer
    assert save.label == "Save" and save.disabled
    chooser.set_value("neutral").run()
    save = widget_named(page.button, "relabel_save")
    assert not save.disabled
    save.click().run()
    assert page.success and "neutral" in page.success[0].value.lower()
