"""`facexpr.Recognizer` as a Python user calls it: every input kind, many at once, plain errors."""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facexpr
from facexpr.core.errors import FacexprError, ImageError
from facexpr.model.predict import predict_image
from tests.conftest import FIXTURES, ROOT, SHIPPED_MODEL

PHOTO = FIXTURES / "astronaut.jpg"


@pytest.fixture(scope="module")
def recognizer() -> facexpr.Recognizer:
    return facexpr.Recognizer()  # the shipped model, as a user gets it


@pytest.fixture(scope="module")
def expected(recognizer):
    (face,) = recognizer.classify(str(PHOTO))
    return face


def same_face(a: facexpr.Face, b: facexpr.Face, tol: float = 1e-5) -> bool:
    return a.box == b.box and a.expression == b.expression and all(
        abs(a.probabilities[k] - b.probabilities[k]) <= tol for k in a.probabilities)


def test_a_path_gives_the_face_with_all_seven_probabilities(recognizer, expected):
    assert recognizer.model_version == SHIPPED_MODEL
    assert expected.expression == "happy"  # the astronaut smiles
    assert list(expected.probabilities) == list(facexpr.EXPRESSIONS)
    assert sum(expected.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert expected.confidence == max(expected.probabilities.values())
    x, y, w, h = expected.box
    assert w > 50 and h > 50 and 0 <= x < 512 and 0 <= y < 512
    assert expected.crop.shape == (48, 48)


@pytest.mark.parametrize("kind", ["Path", "bytes", "bytearray", "PIL RGB", "PIL gray", "numpy RGB",
                                  "numpy gray", "numpy RGBA", "OpenCV BGR reversed"])
def test_every_input_kind_gives_the_same_answer(recognizer, expected, kind):
    data = PHOTO.read_bytes()
    pil = Image.open(PHOTO)
    rgb = np.asarray(pil.convert("RGB"))
    image = {
        "Path": PHOTO, "bytes": data, "bytearray": bytearray(data),
        "PIL RGB": pil, "PIL gray": pil.convert("L"),
        "numpy RGB": rgb, "numpy gray": np.asarray(pil.convert("L")),
        "numpy RGBA": np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
        # cv2.imread's BGR order, reversed as the docs say
        "OpenCV BGR reversed": np.ascontiguousarray(rgb[..., ::-1])[..., ::-1],
    }[kind]
    (face,) = recognizer.classify(image)
    assert same_face(face, expected)


def test_bgr_passed_as_is_is_read_as_rgb_so_the_gray_differs(recognizer):
    rgb = np.asarray(Image.open(PHOTO).convert("RGB"))
    from facexpr.photo.imaging import gray_from_array

    assert not np.array_equal(gray_from_array(rgb[..., ::-1]), gray_from_array(rgb))


def test_float_arrays_in_0_to_1_are_scaled(recognizer, expected):
    rgb = np.asarray(Image.open(PHOTO).convert("RGB")).astype(np.float32) / 255
    (face,) = recognizer.classify(rgb)
    assert face.box == expected.box and face.expression == expected.expression


def test_classify_many_uses_one_batched_model_call(recognizer, expected, two_faces_bytes, blank_photo_bytes,
                                                   monkeypatch):
    calls = []
    real = recognizer.classifier.predict
    monkeypatch.setattr(recognizer.classifier, "predict",
                        lambda crops: calls.append(len(crops)) or real(crops))
    answers = recognizer.classify_many([PHOTO, two_faces_bytes, blank_photo_bytes, str(PHOTO)])
    assert calls == [4]  # 1 + 2 + 0 + 1 faces, one call
    assert [len(a) for a in answers] == [1, 2, 0, 1]
    assert same_face(answers[0][0], expected, tol=1e-4) and same_face(answers[3][0], expected, tol=1e-4)


@pytest.mark.parametrize("image, words", [
    ("no/such/photo.jpg", "no/such/photo.jpg: no such file"),
    (FIXTURES, "is a directory"),
    (b"hello", "not an image facexpr can read"),
    (np.zeros((4, 5, 6, 7)), "must be H×W (gray), H×W×3 (RGB) or H×W×4 (RGBA)"),
    (np.zeros((100, 100, 2)), "not shape (100, 100, 2)"),
    (np.array([["a"]]), "must hold numbers"),
    (np.zeros((3, 300)), "at least 8×8"),
    (12345, "pass a file path, the file's bytes, a PIL image or a numpy array"),
])
def test_what_it_cannot_read_raises_facexpr_error_in_words(recognizer, image, words):
    with pytest.raises(FacexprError, match=None) as caught:
        recognizer.classify(image)
    assert words in str(caught.value)


def test_classify_many_names_the_image_it_cannot_read(recognizer):
    with pytest.raises(ImageError, match=r"^Image 2: This file is not an image"):
        recognizer.classify_many([PHOTO, b"junk", PHOTO])


def test_an_unknown_faces_mode_or_model_is_a_facexpr_error(tmp_path):
    with pytest.raises(FacexprError, match="faces must be one of"):
        facexpr.Recognizer(faces="sideways")
    with pytest.raises(FacexprError, match="does not exist"):
        facexpr.Recognizer(tmp_path / "missing.keras")


def test_the_model_setting_is_honoured(use_tiny_model):
    assert facexpr.Recognizer().model_version == "tiny-test"


def test_predict_image_takes_a_path_too(tiny_classifier):
    by_path = predict_image(PHOTO, tiny_classifier)
    assert by_path.image_sha256 == predict_image(PHOTO.read_bytes(), tiny_classifier).image_sha256
    with pytest.raises(ImageError, match="missing.jpg: no such file"):
        predict_image(Path("missing.jpg"), tiny_classifier)


def test_the_docstring_example_runs(monkeypatch):
    import facexpr.serve.recognizer

    monkeypatch.chdir(ROOT)
    result = doctest.testmod(facexpr.serve.recognizer, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 4 and result.failed == 0


def test_importing_facexpr_loads_neither_opencv_nor_tensorflow():
    code = ("import sys, facexpr; "
            "print(facexpr.__version__, 'cv2' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == [facexpr.__version__, "False", "False"]
