"""Finding faces (BlazeFace, the Haar cascade) and the 48×48 crop."""

import numpy as np

from facexpr.core.types import Box
from facexpr.photo.detectors.haar import haar_boxes
from facexpr.photo.faces import (
    crop_face,
    detect_faces,
    find_crops,
    find_faces,
    is_ready_crop,
    whole_image_crop,
)
from facexpr.photo.imaging import decode_gray


def test_one_face_found_where_it_is(astronaut_bytes):
    boxes = detect_faces(decode_gray(astronaut_bytes))
    assert len(boxes) == 1
    face = boxes[0]
    # The face in the public-domain portrait sits left of centre, in the upper third.
    assert 140 < face.x + face.w / 2 < 260 and 60 < face.y + face.h / 2 < 170
    assert 70 < face.w < 160


def test_two_faces_are_both_found_in_reading_order(two_faces_bytes):
    boxes = detect_faces(decode_gray(two_faces_bytes))
    assert len(boxes) == 2
    assert boxes[0].x < 512 <= boxes[1].x  # face 1 is the left one


def test_the_cascade_finds_two_faces_largest_first(two_faces_bytes):
    boxes = haar_boxes(decode_gray(two_faces_bytes))
    assert len(boxes) == 2 and boxes[0].w * boxes[0].h >= boxes[1].w * boxes[1].h
    assert {b.x < 512 for b in boxes} == {True, False}  # one in each half


def test_no_face_in_a_gradient(blank_photo_bytes):
    assert detect_faces(decode_gray(blank_photo_bytes)) == []
    assert find_crops(decode_gray(blank_photo_bytes), "auto") == ("detect", [], [])


def test_the_eyes_and_mouth_are_where_a_face_has_them(astronaut_bytes):
    (face,) = find_faces(decode_gray(astronaut_bytes))
    marks, box = face.landmarks, face.box
    assert marks.eye_left[0] < marks.eye_right[0]  # image-left eye first
    assert max(marks.eye_left[1], marks.eye_right[1]) < marks.mouth[1]  # the mouth below the eyes
    assert 0.25 * box.w < marks.eye_distance() < 0.6 * box.w
    for x, y in (marks.eye_left, marks.eye_right, marks.mouth):
        assert box.x <= x <= box.x + box.w and box.y <= y <= box.y + box.h


def test_a_face_that_fills_the_image_is_found(astronaut_bytes):
    """An avatar or an ID photo: the face is the whole image (here: its own box and a little more)."""
    gray = decode_gray(astronaut_bytes)
    (face,) = find_faces(gray)
    for margin in (0.0, 0.1):
        m = round(margin * face.box.w)
        x0, y0 = face.box.x - m, face.box.y - m
        x1, y1 = face.box.x + face.box.w + m, face.box.y + face.box.h + m
        close_up = gray[y0:y1, x0:x1]
        assert close_up.shape[0] > 64  # larger than a ready crop: it is searched, not taken as is
        big = np.kron(close_up, np.ones((3, 3), np.uint8))  # as a phone would send it
        (found,) = find_faces(big)
        assert found.box.w > 0.7 * big.shape[1]
        assert find_crops(big, "auto")[0] == "detect"


def test_a_small_face_far_from_the_camera_is_found(astronaut_bytes):
    """A face a twentieth of the photo's side, which the detectors miss on the whole photo, is
    found in the overlapping tiles, in the photo's coordinates."""
    import cv2

    gray = decode_gray(astronaut_bytes)
    (face,) = find_faces(gray)
    small = cv2.resize(gray, None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA)
    canvas = np.full((900, 900), 128, np.uint8)
    canvas[300:300 + small.shape[0], 225:225 + small.shape[1]] = small
    (found,) = find_faces(canvas)
    assert abs(found.box.x - (225 + 0.4 * face.box.x)) < 8 and abs(found.box.y - (300 + 0.4 * face.box.y)) < 8


def test_detection_on_a_large_photo_maps_boxes_back(astronaut_bytes):
    gray = decode_gray(astronaut_bytes)
    big = np.kron(gray, np.ones((3, 3), dtype=np.uint8))  # 1536×1536: detected on a small copy
    (small_box,), (big_box,) = detect_faces(gray), detect_faces(big)
    assert abs(big_box.x - 3 * small_box.x) < 30 and abs(big_box.w - 3 * small_box.w) < 40


def test_crop_is_48_square_and_pads_at_the_border():
    gray = np.zeros((100, 100), dtype=np.uint8)
    gray[:50, :50] = 200
    crop = crop_face(gray, Box(-10, -10, 40, 40))
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    assert crop.mean() > 150  # edge padding repeats the bright corner, not black


def test_ready_crops_and_whole_image():
    assert is_ready_crop(np.zeros((48, 48), np.uint8)) and is_ready_crop(np.zeros((64, 30), np.uint8))
    assert not is_ready_crop(np.zeros((65, 40), np.uint8))
    box, crop = whole_image_crop(np.zeros((200, 300), np.uint8))
    assert box == Box(50, 0, 200, 200) and crop.shape == (48, 48)


def test_a_face_too_small_for_the_cascades_first_pass_is_found_by_the_second(astronaut_bytes):
    import cv2

    from facexpr.photo.detectors.haar import COARSE_PASSES, DETECT_MAX_SIDE

    gray = decode_gray(astronaut_bytes)
    (face,) = haar_boxes(gray)
    small = cv2.resize(gray, (370, 370), interpolation=cv2.INTER_AREA)
    canvas = np.pad(small, ((0, 230), (0, 430)), mode="edge")  # 800×600: the face is ~12 % of 600 px
    side = face.w * 370 / 512
    coarsest = max(size for size, _ in COARSE_PASSES)
    assert side * coarsest / 800 < 24 <= side * DETECT_MAX_SIDE / 800  # below the cheap passes' window
    (found,) = haar_boxes(canvas)
    assert abs(found.x - face.x * 370 / 512) < 15 and abs(found.y - face.y * 370 / 512) < 15


def test_crop_framing_moves_and_scales_the_square():
    gray = np.zeros((200, 200), dtype=np.uint8)
    gray[:100] = 255  # bright above the middle row, dark below
    box = Box(50, 50, 100, 100)  # centred on the boundary
    as_is = crop_face(gray, box, 1.0, 0.0)
    assert as_is[:24].mean() == 255 and as_is[24:].mean() == 0
    # Centre raised by a quarter side: three quarters of the crop lie above the boundary.
    assert abs(crop_face(gray, box, 1.0, -0.25).mean() - 0.75 * 255) < 6
    assert abs(crop_face(gray, box, 1.0, 0.25).mean() - 0.25 * 255) < 6
    gray[:, :] = 0
    gray[90:110, 90:110] = 255  # a 20 px bright square at the centre
    # Half the side: the square fills four times the share of the crop.
    assert crop_face(gray, box, 0.5, 0.0).mean() > crop_face(gray, box, 1.0, 0.0).mean() * 3
