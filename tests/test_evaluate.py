"""Evaluation figures against a hand-computed confusion matrix."""

import numpy as np
import pytest

from facexpr.core.errors import DataError
from facexpr.learn.evaluate import evaluate_dir, report
from tests.conftest import image_bytes


def test_report_matches_hand_computed_figures():
    # true:  angry angry angry happy happy sad   sad(no face)
    # pred:  angry happy angry happy happy angry  -
    y_true = np.array([0, 0, 0, 3, 3, 4, 4])
    y_pred = np.array([0, 3, 0, 3, 3, 0, -1])
    r = report(y_true, y_pred)
    assert r["n"] == 7 and r["accuracy"] == pytest.approx(4 / 7, abs=1e-4)
    confusion = np.zeros((7, 7), int)
    confusion[0, 0], confusion[0, 3], confusion[3, 3], confusion[4, 0] = 2, 1, 2, 1
    assert r["confusion"] == confusion.tolist()
    angry, happy, sad = r["per_class"]["angry"], r["per_class"]["happy"], r["per_class"]["sad"]
    assert angry["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert angry["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert happy["precision"] == pytest.approx(2 / 3, abs=1e-4) and happy["recall"] == 1.0
    assert happy["f1"] == pytest.approx(0.8, abs=1e-4)
    assert sad == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert r["per_class"]["fear"]["support"] == 0


def test_evaluate_dir_counts_images_and_faces(tmp_path, tiny_classifier, blank_photo_bytes):
    crop = np.full((48, 48), 128, np.uint8)
    for label in ("happy", "sad"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "a.png").write_bytes(image_bytes(crop))
    (tmp_path / "sad" / "photo.png").write_bytes(blank_photo_bytes)  # no face: counts as wrong
    (tmp_path / "notes").mkdir()  # not an expression: ignored
    r = evaluate_dir(tmp_path, tiny_classifier, "auto")
    # the two 48×48 images are ready crops, not faces the finder found; the photo has no face
    assert r["n"] == 3 and r["ready_crops"] == 2 and r["faces_found"] == 0
    assert sum(map(sum, r["confusion"])) == 2
    # read as a whole image where no face was found: on its own line, never counted as found
    assert r["whole_image_fallback"]["images"] == 1
    assert r["per_class"]["sad"]["support"] == 2


def test_evaluate_dir_without_images_is_a_clear_error(tmp_path, tiny_classifier):
    with pytest.raises(DataError, match="No images"):
        evaluate_dir(tmp_path, tiny_classifier)


def test_a_labelled_photo_folder_on_s3_is_cut_as_the_same_folder_on_disk(s3, tmp_path, astronaut_bytes,
                                                                         blank_photo_bytes):
    """FACEXPR_PHOTOS_VAL / `retrain --photos-val` may name an s3:// folder: it is read over S3 and
    gives the faces the same folder gives on disk (stray keys and other folders left out)."""
    from facexpr.learn.evaluate import labelled_crops

    files = {"happy/a.jpg": astronaut_bytes, "angry/blank.png": blank_photo_bytes}
    for key, data in files.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(data)
        s3.client.put_object(Bucket=s3.bucket, Key=f"photos-val/{key}", Body=data)
    s3.client.put_object(Bucket=s3.bucket, Key="photos-val/notes/x.jpg", Body=astronaut_bytes)
    s3.client.put_object(Bucket=s3.bucket, Key="photos-val/readme.txt", Body=b"not a photo")
    remote = labelled_crops(f"s3://{s3.bucket}/photos-val/")
    local = labelled_crops(tmp_path)
    assert remote.y_true.tolist() == local.y_true.tolist() and len(remote.y_true) == 2
    assert [c is None for c in remote.crops] == [c is None for c in local.crops] == [True, False]
    assert np.array_equal(remote.crops[1], local.crops[1])
