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
    assert list(table.columns) == ["crop", "file", "face", "expression", "confidence"]  # one "face"
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
