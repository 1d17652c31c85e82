"""S3 or MongoDB unreachable while a person works: the page says so, and nothing is lost.

The classify and model-health pages run under AppTest with the service pointed at a closed
loopback port; afterwards the service comes back (moto's S3 server on loopback; mongomock for
MongoDB, as no MongoDB server can run here) and what was kept locally arrives there exactly once.
The same outage in a real browser is in tests/test_e2e_browser.py.
"""

from __future__ import annotations

import hashlib

from streamlit.testing.v1 import AppTest

from facexpr.app.ui import widget_named
from facexpr.cli import main as cli
from facexpr.core.labels import EXPRESSIONS
from tests.conftest import ROOT
from tests.s3server import closed_port_url

CLASSIFY = str(ROOT / "pages" / "classify.py")
HEALTH = str(ROOT / "pages" / "model_health.py")


def classify_and_correct(data: bytes) -> tuple[AppTest, str, str]:
    """Upload DATA, change the answer to another expression and save; returns (page, predicted, chosen)."""
    at = AppTest.from_file(CLASSIFY, default_timeout=60).run()
    at.file_uploader(key="upload").set_value(("me.jpg", data, "image/jpeg")).run()
    assert not at.exception
    predicted = at.subheader[0].value.lower()
    assert predicted in EXPRESSIONS  # the answer is given whatever the services do
    chosen = "surprise" if predicted != "surprise" else "neutral"
    widget_named(at.selectbox, "relabel_label").select(chosen).run()
    widget_named(at.button, "relabel_save").click().run()
    assert not at.exception
    return at, predicted, chosen


def texts(at: AppTest) -> str:
    return "\n".join(e.value for kind in ("error", "warning", "success", "info") for e in getattr(at, kind))


def test_s3_down_keeps_the_correction_and_sync_delivers_it_once(s3, monkeypatch, use_tiny_model,
                                                                  astronaut_bytes, isolated_settings):
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed_port_url())  # S3 goes away while the person works
    at, _, chosen = classify_and_correct(astronaut_bytes)

    queued = [w.value for w in at.warning if "outbox" in w.value]
    assert len(queued) == 1, texts(at)
    assert f"s3://{s3.bucket}/relabeled/{chosen}/" in queued[0]  # where it will go
    assert "AWS_ENDPOINT_URL" in queued[0]  # and which setting to check
    assert not at.error
    outbox = [p for p in (isolated_settings / "outbox").rglob("*") if p.is_file()]
    assert any(p.read_bytes().startswith(b"\x89PNG") for p in outbox), "the face crop is not kept"
    assert s3.keys() == []

    # S3 is back: `python -m facexpr sync` delivers the crop and the original, once.
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint.url)
    assert cli(["sync"]) == 0
    crops = s3.keys("relabeled/")
    assert len(crops) == 1 and crops[0].startswith(f"relabeled/{chosen}/") and crops[0].endswith(".png")
    sha = hashlib.sha256(astronaut_bytes).hexdigest()
    assert s3.keys("originals/") == [f"originals/{sha}.jpg"]
    assert cli(["sync"]) == 0  # nothing left to send, nothing sent twice
    assert len(s3.keys()) == 2


def test_mongodb_down_answers_shown_and_records_kept_until_it_is_back(monkeypatch, use_tiny_model,
                                                                      astronaut_bytes, isolated_settings):
    uri = closed_port_url().replace("http://", "mongodb://") + "/"
    monkeypatch.setenv("FACEXPR_MONGODB_URI", uri)
    at, predicted, chosen = classify_and_correct(astronaut_bytes)

    shown = texts(at)
    assert "unreachable" in shown and "kept locally" in shown, shown
    assert any(f"Saved as {chosen}" in s.value for s in at.success)  # the image store still works
    assert not at.error

    health = AppTest.from_file(HEALTH, default_timeout=60).run()
    assert not health.exception and not health.error
    assert any("Database unreachable" in w.value for w in health.warning)

    # The database is back: everything kept locally arrives, with the person's answer.
    import mongomock

    from facexpr.storage.history import MongoHistory

    client = mongomock.MongoClient(tz_aware=True)
    back = MongoHistory(uri, "facexpr", isolated_settings, client=client)
    try:
        assert back.pending() >= 2  # the prediction and the answer
        back.flush()
        assert back.pending() == 0
    finally:
        back.close()
    docs = list(client["facexpr"]["predictions"].find())
    assert len(docs) == 1
    assert docs[0]["image_sha256"] == hashlib.sha256(astronaut_bytes).hexdigest()
    assert docs[0]["expression"] == predicted
    assert docs[0]["feedback"]["label"] == chosen and docs[0]["feedback"]["confirmed"] is False


def test_a_broken_database_setting_is_named_not_a_traceback(monkeypatch, use_tiny_model):
    monkeypatch.setenv("FACEXPR_MONGODB_URI", "mongodb://[not a host")
    health = AppTest.from_file(HEALTH, default_timeout=60).run()
    assert not health.exception
    assert "FACEXPR_MONGODB_URI" in texts(health)
