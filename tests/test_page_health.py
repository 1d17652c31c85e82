"""The model-health page as a person sees it (Streamlit AppTest), driven by `health_window`."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta

import pytest
from streamlit.testing.v1 import AppTest

from facexpr.app.ui import widget_named
from facexpr.storage.history import EMBEDDED_FILE, SqliteHistory
from tests.conftest import ROOT
from tests.histories import doc

PAGE = str(ROOT / "pages" / "model_health.py")


def run_page(window: str | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    if window:
        at.selectbox(key="health_window").set_value(window).run()
    assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label))


@pytest.fixture
def recent_history(isolated_settings):
    """Four faces over the last three days (one answered, one corrected) and one from last year."""
    now = datetime.now(UTC)
    history = SqliteHistory(isolated_settings / EMBEDDED_FILE)
    history.insert_documents([
        doc(now - timedelta(hours=1), "fer-v2", "happy", 0.9, (1, 20, 5, 26), ("happy", True)),
        doc(now - timedelta(hours=2), "fer-v2", "sad", 0.4, (1, 22, 5, 28), ("angry", False)),
        doc(now - timedelta(days=2), "fer-v1", "neutral", 0.8, (2, 30, 6, 38)),
        doc(now - timedelta(days=3), "fer-v1", "fear", 0.3, (2, 31, 6, 39)),
        doc(now - timedelta(days=400), "fer-v0", "angry", 0.7, (2, 31, 6, 39)),
    ])
    history.close()
    return history


def test_page_with_history_shows_the_live_figures(recent_history):
    at = run_page()
    assert at.selectbox(key="health_window").value == "Last 7 days"
    assert metric(at, "Faces classified") == "4"
    assert metric(at, "Mean confidence") == "60%"  # (0.9 + 0.4 + 0.8 + 0.3) / 4
    assert metric(at, "Low confidence") == "50%"
    assert metric(at, "Agreement with people") == "50%"  # one confirmed, one corrected
    headers = [h.value for h in at.subheader]
    for title in ("Predictions per day", "Confidence", "Agreement with people", "Latency by stage",
                  "Model versions", "Relabels gathered"):
        assert title in headers
    assert len(at.get("vega_lite_chart")) >= 8
    table = at.dataframe[0].value.set_index("model_version")
    assert table.loc["fer-v2", "predictions"] == 2 and table.loc["fer-v1", "predictions"] == 2
    assert not at.warning


def test_the_window_changes_what_is_counted(recent_history):
    assert metric(run_page("Last 24 hours"), "Faces classified") == "2"
    assert metric(run_page("All time"), "Faces classified") == "5"


def test_empty_history_gets_a_friendly_note(isolated_settings):
    at = run_page()
    assert any("No predictions recorded" in i.value for i in at.info)
    assert not at.metric or all(not m.label.startswith("Faces") for m in at.metric)
    assert not at.warning and not at.error


def test_offline_card_metrics_beside_the_live_ones(recent_history, use_tiny_model):
    at = run_page()
    assert metric(at, "Validation accuracy · tiny-test") == "50%"  # the test card says 0.5
    # Beside tiny-test's card, only tiny-test's answers: the two answers were to fer-v2's predictions.
    assert metric(at, "Live agreement with people · tiny-test") == "—"
    assert metric(at, "Agreement with people") == "50%"  # every version, in the headline
    # The card was "trained" on 2026-01-01: both answers came after it.
    assert any("since 2026-01-01" in c.value for c in at.caption)


def test_an_unreachable_database_is_a_warning_not_a_failure(isolated_settings, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("FACEXPR_MONGODB_URI", f"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=200"
                                              "&connectTimeoutMS=200&directConnection=true")
    at = run_page()
    assert any("Database unreachable" in w.value for w in at.warning)
    assert "Model health" in at.title[0].value


def test_classified_and_corrected_photos_show_on_model_health(use_tiny_model, astronaut_bytes,
                                                             two_faces_bytes):
    """The issue's "done when": classify a few photos, correct one, and the page shows exactly those."""
    from facexpr.core.labels import EXPRESSIONS

    classify = AppTest.from_file(str(ROOT / "pages" / "classify.py"), default_timeout=60)
    classify.run()
    classify.file_uploader(key="upload").set_value(("one.jpg", astronaut_bytes, "image/jpeg")).run()
    predicted = classify.subheader[0].value.lower()
    other = next(e for e in EXPRESSIONS if e != predicted)
    widget_named(classify.selectbox, "relabel_label").set_value(other).run()
    widget_named(classify.button, "relabel_save").click().run()
    classify.run()  # a rerun must not record the photo again
    classify.file_uploader(key="upload").set_value(("two.png", two_faces_bytes, "image/png")).run()
    assert not classify.exception and not classify.warning

    at = run_page()
    assert metric(at, "Faces classified") == "3"  # one face, then two
    assert metric(at, "Agreement with people") == "0%"  # the one answer corrected the model
    table = at.dataframe[0].value
    assert list(table["model_version"]) == ["tiny-test"] and list(table["answered"]) == [1]


@pytest.fixture
def mixed_sources(recent_history, isolated_settings):
    """RECENT_HISTORY's four uploads, plus a camera face and two photos with no face found."""
    from tests.histories import no_face_doc

    now = datetime.now(UTC)
    history = SqliteHistory(isolated_settings / EMBEDDED_FILE)
    history.insert_documents([
        doc(now - timedelta(hours=3), "fer-v2", "happy", 0.7, (1, 20, 5, 26), source="camera"),
        no_face_doc(now - timedelta(hours=4), "fer-v2", "camera"),
        no_face_doc(now - timedelta(hours=5), "fer-v2", "upload"),
    ])
    history.close()


def test_no_face_rate_and_the_source_filter(mixed_sources):
    at = run_page()
    assert metric(at, "Faces classified") == "5"
    assert metric(at, "Images classified") == "7"
    assert metric(at, "No face found") == "29%"  # 2 of 7 images
    assert at.selectbox(key="health_source").value is None  # every source by default
    at.selectbox(key="health_source").set_value("camera").run()
    assert metric(at, "Faces classified") == "1"
    assert metric(at, "No face found") == "50%"
    assert metric(at, "Agreement with people") == "—"
    at.selectbox(key="health_source").set_value("batch").run()
    assert any("No predictions recorded" in i.value and "source batch" in i.value for i in at.info)


def test_agreement_shows_its_n_and_says_when_it_is_too_few(recent_history):
    at = run_page()
    assert metric(at, "Answers from people") == "2"
    notes = [c.value for c in at.caption if c.value.startswith("Agreement with people: n = 2 answers: ")]
    assert notes and "too few for the agreement to mean much (it needs 20 or more" in notes[0]


def test_model_versions_table_shows_percentages(recent_history):
    at = run_page()
    config = json.loads(at.dataframe[0].proto.columns)
    for column in ("mean_confidence", "low_confidence_share", "agreement"):
        assert config[column]["type_config"]["format"] == "percent", config[column]


def test_count_axes_have_whole_number_ticks(recent_history, use_tiny_model):
    # The relabels chart counts answers since the served model was trained: the tiny model's card is
    # from January, so the fixture's answers of the last hours count however new the shipped model is.
    at = run_page()
    counted = 0
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        for layer in [spec, *spec.get("layer", [])]:
            y = layer.get("encoding", {}).get("y", {})
            if y.get("title") in ("predictions", "answers", "images"):
                assert y["axis"]["tickMinStep"] == 1 and y["axis"]["format"] == "d", y
                counted += 1
    assert counted >= 4  # per day, confidence histogram, agreement, relabels


def test_a_photo_with_no_face_is_counted_as_a_detector_failure(use_tiny_model, astronaut_bytes,
                                                               blank_photo_bytes):
    classify = AppTest.from_file(str(ROOT / "pages" / "classify.py"), default_timeout=60)
    classify.run()
    classify.file_uploader(key="upload").set_value(("face.jpg", astronaut_bytes, "image/jpeg")).run()
    classify.file_uploader(key="upload").set_value(("none.png", blank_photo_bytes, "image/png")).run()
    assert any("No face was found" in w.value for w in classify.warning)
    classify.run()  # a rerun records nothing more
    at = run_page()
    assert metric(at, "Faces classified") == "1"
    assert metric(at, "No face found") == "50%"


def test_the_live_agreement_beside_a_card_is_that_versions(isolated_settings, use_tiny_model):
    """One answer to the served model (confirmed) and three to another version (corrected): beside
    the served model's card, 100 % of n = 1, not 25 % of everyone's."""
    now = datetime.now(UTC)
    history = SqliteHistory(isolated_settings / EMBEDDED_FILE)
    history.insert_documents([
        doc(now - timedelta(hours=1), "tiny-test", "happy", 0.9, (1, 20, 5, 26), ("happy", True)),
        *[doc(now - timedelta(hours=2 + i), "other", "sad", 0.4, (1, 22, 5, 28), ("angry", False))
          for i in range(3)]])
    history.close()
    at = run_page()
    assert not at.exception
    assert metric(at, "Agreement with people") == "25%"
    assert metric(at, "Live agreement with people · tiny-test") == "100%"
    assert any(c.value.startswith("N = 1 answer:") for c in at.caption)  # and too few to mean much
