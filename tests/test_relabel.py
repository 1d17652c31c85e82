"""A person's answer: the crop under its true label (once), the original once, an outbox that
never loses anything, the counts for the page, training reading it back; and the page widget."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facexpr.app.ui import key_name, widget_named
from facexpr.core.config import Settings, load_settings
from facexpr.core.errors import ImageError, LabelError
from facexpr.core.labels import EXPRESSIONS
from facexpr.core.types import Box, FaceResult, Prediction
from facexpr.photo.imaging import encode_png
from facexpr.storage.relabel import (
    StoreOutbox,
    count_relabeled,
    flush_outbox,
    image_extension,
    originals_uri,
    outbox_for,
    relabel_summary,
    save_crop,
    save_relabel,
)
from facexpr.storage.store import LocalStore, open_store
from tests.conftest import image_bytes
from tests.s3server import closed_port_url


def make_crop(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 48), dtype=np.uint8)


def make_prediction(crops: list[np.ndarray], predicted: str = "happy", upload: bytes = b"upload"
                    ) -> Prediction:
    probs = np.full(7, 0.05)
    probs[EXPRESSIONS.index(predicted)] = 0.7
    faces = [FaceResult(Box(0, 0, 48, 48), c, probs) for c in crops]
    return Prediction(hashlib.sha256(upload).hexdigest(), crops[0], faces, "crop", "model-v1")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["local", "s3"])
def backend(request) -> Settings:
    """The configured settings for one backend (S3: a fresh bucket at the loopback endpoint)."""
    if request.param == "s3":
        request.getfixturevalue("s3")
    return load_settings()


def stored(settings: Settings) -> list[str]:
    """Every stored key across both roots, as `relabeled/...` and `originals/...`."""
    if settings.s3_bucket:
        import boto3

        listing = boto3.session.Session().client("s3").list_objects_v2(Bucket=settings.s3_bucket)
        return sorted(o["Key"] for o in listing.get("Contents", []))
    root = Path(settings.data_dir)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and not p.name.endswith(".meta.json") and "outbox" not in p.parts)


def test_save_stores_crop_under_label_and_original_once(backend):
    crop = make_crop()
    png = encode_png(crop)
    upload = image_bytes(np.zeros((100, 80), np.uint8), "JPEG")
    when = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    result = save_relabel(backend, make_prediction([crop], "happy", upload), 0, "Sad", upload, now=when)

    assert result.key == f"sad/{sha(png)}.png" and result.sha256 == sha(png)
    assert not result.queued and not result.confirmed and result.predicted == "happy"
    assert result.original_key == f"{sha(upload)}.jpg"
    if backend.s3_bucket:
        assert result.location == f"s3://{backend.s3_bucket}/relabeled/{result.key}"
        assert result.original_location == f"s3://{backend.s3_bucket}/originals/{result.original_key}"
        assert stored(backend) == [f"originals/{result.original_key}", f"relabeled/{result.key}"]
    else:
        assert result.location == str(backend.data_dir / "relabeled" / result.key)
        assert stored(backend) == [f"originals/{result.original_key}", f"relabeled/{result.key}"]
    message = result.message()  # the label and its folder, not the 64-hex-digit file name
    assert message.startswith("Saved as sad in ") and result.folder in message
    assert result.key[-20:] not in message

    store = open_store(backend.relabeled_uri)
    data = store.get(result.key)
    assert data == png
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), crop)
    assert store.metadata(result.key) == {
        "predicted-expression": "happy", "confidence": "0.700000", "model-version": "model-v1",
        "saved-at": "2026-05-01T12:00:00+00:00", "label": "sad",
        "image-sha256": sha(upload)}  # which photo it came from (for retrain's cross-fitting folds)
    assert open_store(originals_uri(backend)).get(result.original_key) == upload


def test_resave_is_one_object(backend):
    prediction = make_prediction([make_crop()], "fear")
    first = save_relabel(backend, prediction, 0, "fear", b"\x89PNG\r\n\x1a\nupload")
    again = save_relabel(backend, prediction, 0, "fear", b"\x89PNG\r\n\x1a\nupload")
    assert first.confirmed and not first.already_stored and again.already_stored
    assert again.key == first.key and again.location == first.location
    assert len(stored(backend)) == 2  # the crop and the original, once each
    assert len(outbox_for(backend)) == 0


def test_concurrent_saves_store_once(backend):
    prediction = make_prediction([make_crop(3)], "sad")
    results = []
    threads = [threading.Thread(target=lambda: results.append(save_relabel(backend, prediction, 0, "sad")))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.key for r in results}) == 1 and len(results) == 6
    assert stored(backend) == [f"relabeled/{results[0].key}"]


def test_changing_the_answer_replaces_the_earlier_one(backend):
    prediction = make_prediction([make_crop()], "happy")
    first = save_relabel(backend, prediction, 0, "happy")
    second = save_relabel(backend, prediction, 0, "surprise", replaces=first)
    assert second.key.startswith("surprise/") and not second.confirmed
    assert stored(backend) == [f"relabeled/{second.key}"]


def test_bad_input_stores_nothing(backend):
    with pytest.raises(LabelError, match="choose one of"):
        save_relabel(backend, make_prediction([make_crop()]), 0, "smug")
    with pytest.raises(ImageError, match="no face 3"):
        save_relabel(backend, make_prediction([make_crop()]), 2, "sad")
    with pytest.raises(ImageError, match="48×48"):
        save_crop(backend, np.zeros((10, 10), np.uint8), "sad", predicted="sad", confidence=1,
                  model_version="m")
    assert stored(backend) == []
    assert len(outbox_for(backend)) == 0


def test_multi_face_saves_each_face(backend):
    prediction = make_prediction([make_crop(1), make_crop(2)], "neutral")
    a = save_relabel(backend, prediction, 0, "neutral", b"GIF89a...")
    b = save_relabel(backend, prediction, 1, "angry", b"GIF89a...")
    assert a.key != b.key and a.original_key == b.original_key
    assert len(stored(backend)) == 3


def test_counts_since_training(backend):
    for seed, label in enumerate(["happy", "happy", "sad"]):
        save_crop(backend, make_crop(seed), label, predicted="neutral", confidence=0.4, model_version="m")
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat(timespec="seconds")
    counts = count_relabeled(backend, past)
    assert list(counts) == list(EXPRESSIONS)
    assert counts["happy"] == 2 and counts["sad"] == 1 and sum(counts.values()) == 3
    assert sum(count_relabeled(backend, future).values()) == 0
    assert count_relabeled(backend.relabeled_uri) == counts  # by URI, since the beginning
    summary = relabel_summary(backend, past)
    assert summary.total == 3 and summary.pending == 0 and summary.error is None


def test_training_reads_what_was_saved(backend):
    from facexpr.learn.data import load_layout

    crops = [make_crop(s) for s in range(3)]
    for crop, label in zip(crops, ["angry", "happy", "happy"], strict=True):
        save_crop(backend, crop, label, predicted="sad", confidence=0.3, model_version="m", original=b"BMxx")
    dataset = load_layout(backend.relabeled_uri)  # originals are a sibling root: not read
    assert len(dataset) == 3 and dataset.skipped == 0
    assert dataset.counts()["happy"] == 2 and dataset.counts()["angry"] == 1
    assert {img.tobytes() for img in dataset.images} == {c.tobytes() for c in crops}


def test_training_joins_the_relabeled_store(backend, tmp_path):
    from facexpr.learn.train import Recipe, load_training_data

    for split in ("train", "val"):
        LocalStore(tmp_path / "fer" / split).put("happy/0.png", encode_png(make_crop(11)))
    save_crop(backend, make_crop(12), "sad", predicted="happy", confidence=0.6, model_version="m",
              original=b"x")
    train, val, relabeled = load_training_data(str(tmp_path / "fer"), backend.relabeled_uri, Recipe())
    assert (len(train), len(val)) == (1, 1)
    assert relabeled.counts() == {**dict.fromkeys(EXPRESSIONS, 0), "sad": 1}


def test_originals_root_is_a_sibling_of_the_relabeled_prefix(tmp_path):
    assert originals_uri(Settings(s3_bucket="b", s3_prefix="relabeled/")) == "s3://b/originals/"
    assert originals_uri(Settings(s3_bucket="b", s3_prefix="team/x/relabeled/")) == "s3://b/team/x/originals/"
    assert originals_uri(Settings(data_dir=tmp_path)) == str(tmp_path / "originals")


def test_image_extension_from_bytes():
    assert image_extension(image_bytes(np.zeros((4, 4), np.uint8), "JPEG")) == "jpg"
    assert image_extension(image_bytes(np.zeros((4, 4), np.uint8), "PNG")) == "png"
    assert image_extension(image_bytes(np.zeros((4, 4, 3), np.uint8), "WEBP")) == "webp"
    assert image_extension(b"whatever") == "bin"


# ---- the outbox: an outage loses nothing and delivers once


def test_outage_queues_everything_and_sync_delivers_once(s3):
    settings = load_settings()
    s3.endpoint.stop()  # the endpoint goes away
    prediction = make_prediction([make_crop()], "happy", b"\xff\xd8\xff upload")
    result = save_relabel(settings, prediction, 0, "disgust", b"\xff\xd8\xff upload")
    assert result.queued and result.original_queued and result.pending == 2
    assert "AWS_ENDPOINT_URL" in result.reason and "outbox" in result.message()
    assert result.location == f"s3://{s3.bucket}/relabeled/{result.key}"  # where it will be
    again = save_relabel(settings, prediction, 0, "disgust", b"\xff\xd8\xff upload")  # a retry, still down
    assert again.queued and again.pending == 2  # keyed by content: no duplicate
    items = outbox_for(settings).items()
    assert {(i.role, i.key) for i in items} == {("relabeled", result.key), ("originals", result.original_key)}
    crop_item = next(i for i in items if i.role == "relabeled")
    assert outbox_for(settings).data(crop_item) == encode_png(prediction.faces[0].crop)
    assert crop_item.metadata["predicted-expression"] == "happy" and crop_item.metadata["label"] == "disgust"

    report = flush_outbox(settings)  # still down
    assert (report.sent, report.remaining) == (0, 2) and not report.ok
    assert any("AWS_ENDPOINT_URL" in e for e in report.errors.values())

    s3.endpoint.start()  # back, on the same port, with its buckets
    report = flush_outbox(settings)
    assert (report.sent, report.failed, report.remaining) == (2, 0, 0)
    assert s3.keys() == [f"originals/{result.original_key}", f"relabeled/{result.key}"]
    head = s3.client.head_object(Bucket=s3.bucket, Key=f"relabeled/{result.key}")
    assert head["Metadata"]["label"] == "disgust"
    assert flush_outbox(settings).sent == 0 and s3.keys() == [f"originals/{result.original_key}",
                                                              f"relabeled/{result.key}"]


def test_a_later_save_delivers_the_outbox(s3, monkeypatch):
    settings = load_settings()
    live = s3.endpoint.url
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed_port_url())
    queued = save_crop(settings, make_crop(7), "fear", predicted="fear", confidence=0.9, model_version="m")
    assert queued.queued
    monkeypatch.setenv("AWS_ENDPOINT_URL", live)
    later = save_crop(settings, make_crop(8), "sad", predicted="fear", confidence=0.9, model_version="m")
    assert not later.queued and later.synced == 1 and later.pending == 0
    assert "Also delivered 1 item" in later.message()
    assert s3.keys() == sorted([f"relabeled/{queued.key}", f"relabeled/{later.key}"])


def test_bad_credentials_queue_and_name_the_setting(s3):
    settings = load_settings()
    s3.endpoint.check_credentials(True)
    result = save_crop(settings, make_crop(), "happy", predicted="sad", confidence=0.5, model_version="m")
    assert result.queued and "AWS_ACCESS_KEY_ID" in result.reason
    s3.endpoint.check_credentials(False)  # the credentials were fixed
    assert flush_outbox(settings).sent == 1
    assert s3.keys() == [f"relabeled/{result.key}"]


def test_missing_bucket_queues_and_sync_after_the_fix_delivers(s3, monkeypatch):
    monkeypatch.setenv("FACEXPR_S3_BUCKET", "fx-typo-bucket")
    wrong = load_settings()
    result = save_crop(wrong, make_crop(), "angry", predicted="sad", confidence=0.5, model_version="m")
    assert result.queued and "FACEXPR_S3_BUCKET" in result.reason
    summary = relabel_summary(wrong)
    assert summary.pending == 1 and summary.error and "FACEXPR_S3_BUCKET" in summary.error
    assert flush_outbox(wrong).remaining == 1
    monkeypatch.setenv("FACEXPR_S3_BUCKET", s3.bucket)  # the setting is fixed: the queue follows it
    assert flush_outbox(load_settings()).sent == 1
    assert s3.keys() == [f"relabeled/{result.key}"]


def test_changing_the_answer_while_queued_keeps_only_the_last(s3):
    settings = load_settings()
    prediction = make_prediction([make_crop()], "happy")
    s3.endpoint.stop()
    first = save_relabel(settings, prediction, 0, "happy")
    second = save_relabel(settings, prediction, 0, "sad", replaces=first)
    assert first.queued and second.queued
    s3.endpoint.start()
    assert flush_outbox(settings).remaining == 0
    assert s3.keys() == [f"relabeled/{second.key}"]


def test_outbox_ignores_half_written_items_and_keeps_damaged_ones(tmp_path):
    settings = Settings(data_dir=tmp_path)
    outbox = outbox_for(settings)
    outbox.root.mkdir(parents=True)
    (outbox.root / "deadbeef.bin").write_bytes(b"crashed before its .json was written")
    assert outbox.items() == [] and len(outbox) == 0
    outbox.sweep()  # too young to be sure it is an orphan
    assert (outbox.root / "deadbeef.bin").exists()
    outbox.sweep(older_than_s=-1)
    assert not (outbox.root / "deadbeef.bin").exists()
    item = outbox.add("relabeled", "put", "happy/x.png", b"good bytes", {"label": "happy"})
    (outbox.root / f"{item.id}.bin").write_bytes(b"bit rot")
    report = flush_outbox(settings)
    assert (report.sent, report.failed, report.remaining) == (0, 1, 1)
    assert "damaged" in next(iter(report.errors.values()))
    assert not LocalStore(tmp_path / "relabeled").exists("happy/x.png")


def test_outbox_item_files_are_plain_json_and_bytes(tmp_path):
    outbox = StoreOutbox(tmp_path)
    item = outbox.add("originals", "put", "abc.jpg", b"bytes", {"sha256": "abc"}, reason="down")
    again = outbox.add("originals", "put", "abc.jpg", b"bytes", {"sha256": "abc"}, reason="down")
    assert item.id == again.id and len(outbox) == 1
    assert json.loads((tmp_path / f"{item.id}.json").read_text())["key"] == "abc.jpg"
    assert (tmp_path / f"{item.id}.bin").read_bytes() == b"bytes"


# ---- the classify page's widget, driven by its keys


def run_classify(upload: bytes):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    at = AppTest.from_file(str(ROOT / "pages" / "classify.py"), default_timeout=120)
    at.run()
    at.file_uploader(key="upload").set_value(("face.png", upload, "image/png"))
    at.run()
    assert not at.exception, at.exception
    return at


def test_page_confirm_and_correct_store_once(use_tiny_model, s3):
    upload = image_bytes(make_crop(5))  # ≤ 64 px: a ready crop, one face
    at = run_classify(upload)
    chooser, button = widget_named(at.selectbox, "relabel_label"), widget_named(at.button, "relabel_save")
    predicted = chooser.value
    assert predicted in EXPRESSIONS and button.label == "Confirm"
    assert any("Relabeled since this model was trained" in c.value for c in at.caption)

    other = next(e for e in EXPRESSIONS if e != predicted)
    chooser.set_value(other)
    at.run()
    assert widget_named(at.button, "relabel_save").label == "Save correction"
    widget_named(at.button, "relabel_save").click()
    at.run()
    assert not at.exception
    [message] = at.success
    crop_keys = [k for k in s3.keys() if k.startswith("relabeled/")]
    assert len(crop_keys) == 1 and crop_keys[0].startswith(f"relabeled/{other}/")
    assert message.value.startswith(f"Saved as {other} in s3://{s3.bucket}/relabeled/{other}/")
    assert len([k for k in s3.keys() if k.startswith("originals/")]) == 1

    widget_named(at.button, "relabel_save").click()  # a second click on the same answer
    at.run()
    assert [k for k in s3.keys() if k.startswith("relabeled/")] == crop_keys
    assert any(f"{other} 1" in c.value for c in at.caption)  # the counts include it

    widget_named(at.selectbox, "relabel_label").set_value(predicted)  # changed their mind: confirm after all
    at.run()
    assert widget_named(at.button, "relabel_save").label == "Confirm"
    widget_named(at.button, "relabel_save").click()
    at.run()
    [crop_key] = [k for k in s3.keys() if k.startswith("relabeled/")]
    assert crop_key.startswith(f"relabeled/{predicted}/")


def test_page_outage_says_it_was_queued(use_tiny_model, s3):
    at = run_classify(image_bytes(make_crop(6)))
    s3.endpoint.stop()
    widget_named(at.button, "relabel_save").click()
    at.run()
    assert not at.exception
    [warning] = at.warning
    assert "outbox" in warning.value and "AWS_ENDPOINT_URL" in warning.value
    assert len(outbox_for(load_settings())) == 2
    s3.endpoint.start()
    assert flush_outbox(load_settings()).sent == 2
    assert len([k for k in s3.keys() if k.startswith("relabeled/")]) == 1


def test_page_local_store_and_suffixed_keys_for_two_faces(use_tiny_model, two_faces_bytes):
    at = run_classify(two_faces_bytes)
    assert [key_name(s.key) for s in at.selectbox] == ["relabel_label_0", "relabel_label_1"]
    saves = [key_name(b.key) for b in at.button if b.key.startswith("relabel_save")]
    assert saves == ["relabel_save_0", "relabel_save_1"]
    widget_named(at.button, "relabel_save_1").click()
    at.run()
    [message] = at.success
    settings = load_settings()
    assert str(Path(settings.data_dir) / "relabeled") in message.value
    assert sum(count_relabeled(settings).values()) == 1


def test_page_chooser_starts_from_each_new_prediction(use_tiny_model):
    at = run_classify(image_bytes(make_crop(8)))
    first = widget_named(at.selectbox, "relabel_label").value
    old_keys = {widget_named(at.selectbox, "relabel_label").key, widget_named(at.button, "relabel_save").key}
    widget_named(at.selectbox, "relabel_label").set_value(next(e for e in EXPRESSIONS if e != first))
    at.run()
    assert widget_named(at.button, "relabel_save").label == "Save correction"
    at.file_uploader(key="upload").set_value(("other.png", image_bytes(make_crop(9)), "image/png"))
    at.run()
    # A new answer gets new widgets: a browser still holding the old chooser's value (AppTest holds
    # none, tests/test_e2e_chooser.py has one) has no widget of this answer to send it back as.
    new_keys = {widget_named(at.selectbox, "relabel_label").key, widget_named(at.button, "relabel_save").key}
    assert not old_keys & new_keys
    assert widget_named(at.button, "relabel_save").label == "Confirm"  # preset to the new prediction again
    widget_named(at.button, "relabel_save").click()
    at.run()
    [message] = at.success
    assert message.value.startswith("Confirmed as ")
