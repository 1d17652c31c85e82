"""Several faces in one photo: all of them found, numbered left to right, numbers legible."""

from __future__ import annotations

import numpy as np
from PIL import Image

from facexpr.app.charts import BOX_COLOUR, draw_faces, number_size
from facexpr.model.predict import predict_image
from facexpr.photo.faces import detect_faces
from tests.conftest import FIXTURES


def side_by_side(half: int) -> np.ndarray:
    """Two 256-px tiles of the astronaut's face (the second mirrored): a 512×256 photo."""
    gray = np.asarray(Image.open(FIXTURES / "astronaut.jpg").convert("L"))
    cx, cy = 223, 115  # the face's centre
    square = gray[max(0, cy - half):cy + half, cx - half:cx + half]
    tile = np.asarray(Image.fromarray(square).resize((256, 256)))
    return np.concatenate([tile, tile[:, ::-1]], axis=1)


def test_two_256_px_faces_side_by_side_are_both_found():
    for half in (64, 80, 100, 128):  # faces from ~200 px down to ~100 px across
        pair = side_by_side(half)
        assert pair.shape == (256, 512)
        boxes = detect_faces(pair)
        assert len(boxes) == 2, (half, boxes)
        assert sorted(b.x + b.w / 2 < 256 for b in boxes) == [False, True]  # one in each half


def test_faces_are_numbered_left_to_right(tiny_classifier, two_faces_bytes):
    # The right-hand face is the larger in this photo (the detector lists it first).
    prediction = predict_image(two_faces_bytes, tiny_classifier)
    assert len(prediction.faces) == 2
    left, right = (f.box for f in prediction.faces)
    assert left.x + left.w <= right.x


def test_face_numbers_are_legible_tags(tiny_classifier, two_faces_bytes):
    prediction = predict_image(two_faces_bytes, tiny_classifier)
    image = np.asarray(draw_faces(prediction.gray, [f.box for f in prediction.faces]))
    size = number_size((image.shape[1], image.shape[0]))
    assert size >= 0.05 * max(image.shape)  # ~35 px when the page shows the image ~600 px wide
    for face in prediction.faces:
        b = face.box
        tag = image[max(0, b.y - size * 2):b.y, b.x:b.x + size * 2]
        red = np.all(tag == BOX_COLOUR, axis=-1)
        white = np.all(tag == 255, axis=-1)
        rows = np.flatnonzero(red.any(axis=1))
        assert rows.size and rows[-1] - rows[0] >= 0.6 * size, "the tag is as tall as a number"
        assert white.sum() >= size, "a white number is drawn on the tag"


def test_one_face_gets_no_number(tiny_classifier, astronaut_bytes):
    prediction = predict_image(astronaut_bytes, tiny_classifier)
    [box] = [f.box for f in prediction.faces]
    image = np.asarray(draw_faces(prediction.gray, [box]))
    assert not np.all(image[:box.y] == BOX_COLOUR, axis=-1).any()  # nothing drawn above the box
