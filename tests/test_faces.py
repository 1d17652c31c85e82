"""Face detection and the 48×48 crop."""

import numpy as np

from facexpr.core.types import Box
from facexpr.photo.faces import crop_face, detect_faces, is_ready_crop, whole_image_crop
from facexpr.photo.imaging import decode_gray


def test_one_face_found_where_it_is(astronaut_bytes):
    boxes = detect_faces(decode_gray(astronaut_bytes))
    assert len(boxes) == 1
    face = boxes[0]
    # The face in the public-domain portrait sits left of centre, in the upper third.
    assert 140 < face.x + face.w / 2 < 260 and 60 < face.y + face.h / 2 < 170
    assert 70 < face.w < 160


def test_two_faces_are_both_found_largest_first(two_faces_bytes):
    boxes = detect_faces(decode_gray(two_faces_bytes))
    assert len(boxes) == 2
    assert boxes[0].w * boxes[0].h >= boxes[1].w * boxes[1].h
    assert {b.x < 512 for b in boxes} == {True, False}  # one in each half


def test_no_face_in_a_gradient(blank_photo_bytes):
    assert detect_faces(decode_gray(blank_photo_bytes)) == []


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


def test_a_face_too_small_for_the_first_pass_is_found_by_the_second(astronaut_bytes):
    import cv2

    from facexpr.photo.faces import COARSE_PASSES, DETECT_MAX_SIDE

    gray = decode_gray(astronaut_bytes)
    (face,) = detect_faces(gray)
    small = cv2.resize(gray, (370, 370), interpolation=cv2.INTER_AREA)
    canvas = np.pad(small, ((0, 230), (0, 430)), mode="edge")  # 800×600: the face is ~12 % of 600 px
    side = face.w * 370 / 512
    coarsest = max(size for size, _ in COARSE_PASSES)
    assert side * coarsest / 800 < 24 <= side * DETECT_MAX_SIDE / 800  # below the cheap passes' window
    (found,) = detect_faces(canvas)
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
