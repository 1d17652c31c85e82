"""The one call: bytes → Prediction."""

import hashlib

import numpy as np
import pytest

from facexpr.core.errors import ImageError
from facexpr.core.labels import EXPRESSIONS
from facexpr.model.predict import predict_image
from tests.conftest import image_bytes


def test_photo_gives_one_answer_with_timings(astronaut_bytes, tiny_classifier):
    p = predict_image(astronaut_bytes, tiny_classifier)
    assert p.mode == "detect" and len(p.faces) == 1
    face = p.faces[0]
    assert face.crop.shape == (48, 48)
    assert face.probabilities.shape == (7,) and abs(face.probabilities.sum() - 1) < 1e-4
    assert face.expression in EXPRESSIONS and face.confidence == pytest.approx(face.probabilities.max())
    assert set(p.latency_ms) == {"decode", "detect", "classify", "total"}
    assert p.latency_ms["total"] >= p.latency_ms["classify"] > 0
    assert p.image_sha256 == hashlib.sha256(astronaut_bytes).hexdigest()
    assert p.model_version == "tiny-test"


def test_small_image_is_taken_as_a_ready_crop(tiny_classifier):
    crop = np.random.default_rng(1).integers(0, 255, (48, 48), dtype=np.uint8)
    p = predict_image(image_bytes(crop), tiny_classifier)
    assert p.mode == "crop" and [f.box.as_list() for f in p.faces] == [[0, 0, 48, 48]]
    assert np.array_equal(p.faces[0].crop, crop)


def test_no_face_then_whole_image_on_request(blank_photo_bytes, tiny_classifier):
    p = predict_image(blank_photo_bytes, tiny_classifier)
    assert p.no_face and p.mode == "detect"
    whole = predict_image(blank_photo_bytes, tiny_classifier, mode="whole")
    assert len(whole.faces) == 1 and whole.mode == "whole"


def test_each_of_several_faces_is_answered(two_faces_bytes, tiny_classifier):
    p = predict_image(two_faces_bytes, tiny_classifier)
    assert len(p.faces) == 2
    assert p.to_dict()["faces"][1]["box"] == p.faces[1].box.as_list()


def test_bad_bytes_raise_our_error(tiny_classifier):
    with pytest.raises(ImageError):
        predict_image(b"not an image", tiny_classifier)
