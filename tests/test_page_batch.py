"""The batch page: mixed good and bad files, table, CSV, history source=batch."""

from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT


def test_batch_lists_bad_files_and_classifies_the_rest(use_tiny_model, astronaut_bytes, two_faces_bytes):
    at = AppTest.from_file(str(ROOT / "pages" / "batch.py"), default_timeout=60)
    at.run()
    assert "Choose several photos" in at.info[0].value
    at.file_uploader(key="batch_upload").set_value([
        ("a.jpg", astronaut_bytes, "image/jpeg"),
        ("broken.png", b"\x89PNG\r\n\x1a\n garbage", "image/png"),
        ("pair.png", two_faces_bytes, "image/png"),
    ]).run()
    assert not at.exception
    assert "**3 files**, 3 faces, 1 could not be read" in at.markdown[0].value
    assert at.error[0].value.startswith("broken.png: ")
    limits = at.caption[1].value
    assert "PNG" in limits and "20 MB" in limits and "40 megapixels" in limits
    table = at.dataframe[0].value
    assert list(table.columns) == ["crop", "file", "face", "expression", "confidence", "your answer"]
    assert list(table["file"]) == ["a.jpg", "pair.png", "pair.png"]
    assert list(table["face"]) == [1, 1, 2]
    assert not table.isna().any().any()  # no "None" cells: files without an answer are listed above
    assert table["crop"].iloc[0].startswith("data:image/png;base64,")
    assert len(at.get("download_button")) == 1
    assert not at.warning

    from facexpr.core.config import load_settings
    from facexpr.storage.history import open_history

    assert open_history(load_settings()).count() == 3  # one history document per face


def test_one_face_is_one_face_and_a_photo_without_one_is_named(use_tiny_model, astronaut_bytes,
                                                              blank_photo_bytes):
    at = AppTest.from_file(str(ROOT / "pages" / "batch.py"), default_timeout=60)
    at.run()
    at.file_uploader(key="batch_upload").set_value([("a.jpg", astronaut_bytes, "image/jpeg"),
                                                    ("wall.png", blank_photo_bytes, "image/png")]).run()
    assert not at.exception
    assert at.markdown[0].value == "**2 files**, 1 face, 1 photo without a face"
    assert at.warning[0].value == "No face found in wall.png."


def test_a_batch_face_is_corrected_once_under_one_label_and_the_rest_wait_for_review(
        use_tiny_model, astronaut_bytes, two_faces_bytes):
    """Issue 22: batch answers join the loop. A face corrected from the Batch page goes the relabel
    path under the label given (and moves, never doubles, when changed); its history record gets
    the answer; the faces nobody answered are in the Review queue, and the answered one is not."""
    from facexpr.app.review import review_queue
    from facexpr.app.ui import widget_named
    from facexpr.core.config import load_settings
    from facexpr.storage.history import open_history
    from facexpr.storage.store import open_store

    at = AppTest.from_file(str(ROOT / "pages" / "batch.py"), default_timeout=60).run()
    at.file_uploader(key="batch_upload").set_value([("a.jpg", astronaut_bytes, "image/jpeg"),
                                                    ("pair.png", two_faces_bytes, "image/png")]).run()
    assert not at.exception
    picker = next(s for s in at.selectbox if s.key.startswith("batch_face-"))
    assert [o.split(":")[0] for o in picker.options] == \
        ["a.jpg · face 1", "pair.png · face 1", "pair.png · face 2"]
    picker.set_value(2).run()  # pair.png, face 2
    label = widget_named(at.selectbox, "batch_label_1")
    predicted = label.value
    wrong = next(e for e in ("angry", "surprise") if e != predicted)
    label.set_value(wrong).run()
    widget_named(at.button, "batch_save_1").click().run()
    assert not at.exception and f"as {wrong}" in at.success[0].value
    assert at.dataframe[0].value["your answer"].tolist() == ["", "", wrong]
    widget_named(at.selectbox, "batch_label_1").set_value("fear").run()  # changed its mind
    widget_named(at.button, "batch_save_1").click().run()
    assert not at.exception

    settings = load_settings()
    stored = open_store(settings.relabeled_uri).list_keys()
    assert [k.split("/")[0] for k in stored if k.endswith(".png")] == ["fear"]  # one face, one label
    history = open_history(settings)
    assert history.count() == 3  # one record per face, the corrected one not recorded twice
    answered = [r for r in (history.get(str(i)) for i in range(1, 4)) if r.get("feedback")]
    assert [(r["source"], r["face_index"], r["feedback"]["label"]) for r in answered] == \
        [("batch", 1, "fear")]
    queued = review_queue(history, settings)
    assert sorted((q.face_index, q.image_sha256 == answered[0]["image_sha256"]) for q in queued) == \
        [(0, False), (0, True)]  # a.jpg's face and pair.png's first face wait; its second was answered
