"""Faces aligned onto FER2013's template: where the eyes and mouth land, whatever the photo did."""

import cv2
import numpy as np
import pytest

from facexpr.core.types import Landmarks
from facexpr.photo.align import FER_TEMPLATE, align_face, similarity, template
from facexpr.photo.faces import cut, find_faces
from facexpr.photo.geometry import FER_TEMPLATE as FER_GEOMETRY
from facexpr.photo.geometry import HAAR_BOX
from facexpr.photo.imaging import decode_gray


def _moved(gray: np.ndarray, angle: float, scale: float, shift: tuple[float, float], size: int) -> np.ndarray:
    """GRAY turned by ANGLE degrees and scaled about its centre, shifted, on a SIZE² grey canvas."""
    h, w = gray.shape
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    matrix[:, 2] += (size / 2 - w / 2 + shift[0], size / 2 - h / 2 + shift[1])
    return cv2.warpAffine(gray, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=128)


def test_the_similarity_recovers_a_known_turn_scale_and_shift():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 100, (3, 2))
    turn = np.deg2rad(25)
    truth = 1.7 * np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    moved = points @ truth.T + (12.0, -5.0)
    matrix = similarity(points, moved)
    assert np.allclose(matrix[:, :2], truth, atol=1e-9) and np.allclose(matrix[:, 2], (12.0, -5.0), atol=1e-9)


def test_synthetic_landmarks_land_on_the_template():
    """Three bright dots where the 'eyes' and 'mouth' are, anywhere and at any size in a photo,
    come out on FER2013's eye and mouth positions in the 48×48 crop."""
    for eye_left, eye_right, mouth in [((300, 400), (500, 380), (410, 600)),  # large, tilted
                                       ((40, 52), (60, 52), (50, 72))]:  # small, level
        photo = np.zeros((800, 800), np.uint8)
        points = np.array([eye_left, eye_right, mouth], float)
        radius = max(2, round(np.linalg.norm(points[1] - points[0]) / 18))  # ~1 px in the crop
        for x, y in points:
            cv2.circle(photo, (round(x), round(y)), radius, 255, -1)
        crop = align_face(photo, Landmarks(*[(x + 0.5, y + 0.5) for x, y in points]))  # pixel centres
        for (tx, ty) in FER_TEMPLATE:
            ys, xs = np.mgrid[0:48, 0:48]
            near = (np.hypot(xs + 0.5 - tx, ys + 0.5 - ty) < 2.5)
            assert crop[near].max() > 100, f"no dot near the template point ({tx}, {ty})"
        # and nowhere else: the dots' brightness sits around the three template points
        far = np.ones((48, 48), bool)
        for (tx, ty) in FER_TEMPLATE:
            far &= np.hypot(xs + 0.5 - tx, ys + 0.5 - ty) > 4
        assert crop[far].max() < 30


def test_a_template_scale_zooms_about_the_crop_centre():
    assert np.allclose(template(1.0), FER_TEMPLATE)
    wider = template(1.2)
    assert np.allclose(wider - 24, 1.2 * (FER_TEMPLATE - 24))


def test_a_large_face_is_shrunk_without_aliasing():
    """A 1-px checkerboard face 20× larger than the crop averages to grey, not to a moiré."""
    board = ((np.indices((2000, 2000)).sum(0) % 2) * 255).astype(np.uint8)
    crop = align_face(board, Landmarks((700.0, 800.0), (1300.0, 800.0), (1000.0, 1400.0)))
    assert abs(crop.mean() - 127.5) < 3 and crop.std() < 6


@pytest.mark.parametrize("angle, scale, shift", [(0, 1.0, (0, 0)), (12, 1.0, (30, -20)),
                                                 (-15, 0.6, (-40, 25)), (8, 1.7, (10, 10))])
def test_a_face_moved_turned_or_scaled_gives_nearly_the_same_crop(astronaut_bytes, angle, scale, shift):
    gray = decode_gray(astronaut_bytes)
    (face,) = find_faces(gray)
    reference = cut(gray, face).astype(float)
    moved = _moved(gray, angle, scale, shift, 900)
    (found,) = find_faces(moved)
    aligned = cut(moved, found).astype(float)
    assert np.abs(aligned - reference).mean() < 12  # gray levels; a 3-px shift of the crop gives ~32
    # The Haar box crop of the same turned photo, for scale: alignment undoes what the box cannot.
    haar = find_faces(moved, HAAR_BOX)
    if angle and haar:
        boxed = cut(moved, haar[0], HAAR_BOX).astype(float)
        assert np.abs(aligned - reference).mean() < np.abs(boxed - reference).mean()


def test_the_shipped_geometry_is_the_aligned_one():
    from facexpr.model.classifier import newest_model, read_card

    assert read_card(newest_model()).crop == FER_GEOMETRY
