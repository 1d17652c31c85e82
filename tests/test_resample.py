"""The photo path's resampling on Pillow: crops as OpenCV cut them (the model was checked on those),
within a gray level or two (a few at a sharp edge), so leaving OpenCV out of the lean install moves
no answer that matters (benchmarks: the development photo sets scored the same within a photo)."""

from __future__ import annotations

import numpy as np
import pytest

from facexpr.photo import resample

cv2 = pytest.importorskip("cv2")  # the reference; the [train] extra brings it


def photo_like(h: int = 300, w: int = 400, seed: int = 0) -> np.ndarray:
    """Smooth gray structure with edges, like a photo at this scale (noise alone would hide offsets)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((h, w))
    img = 128 + 60 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + rng.normal(0, 4, (h, w))
    img[h // 3:h // 2, w // 4:w // 2] += 50  # a bright block: its edges show any half-pixel shift
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("angle", "scale", "shift"), [(0, 1.0, (0, 0)), (12, 0.7, (-40, -60)),
                                                      (-30, 1.8, (-150, -90)), (45, 0.3, (90, 160))])
@pytest.mark.parametrize("value", [None, 128])
def test_warp_matches_opencv_within_a_gray_level_or_two(angle, scale, shift, value):
    gray = photo_like()
    matrix = cv2.getRotationMatrix2D((200.0, 150.0), angle, scale)
    matrix[:, 2] += shift
    border = cv2.BORDER_REPLICATE if value is None else cv2.BORDER_CONSTANT
    expected = cv2.warpAffine(gray, matrix, (192, 192), flags=cv2.INTER_LINEAR, borderMode=border,
                              borderValue=value or 0)
    warped = resample.warp_affine(gray, resample.rotation((200.0, 150.0), angle, scale) + [[0, 0, shift[0]],
                                                                                          [0, 0, shift[1]]],
                                  (192, 192), value)
    assert warped.shape == (192, 192) and warped.dtype == np.uint8
    difference = np.abs(warped.astype(int) - expected)
    # OpenCV weighs neighbours in 1/32 steps: at the block's edge (a jump of 50) that is 2 levels
    assert difference.max() <= 2 and difference.mean() < 0.6


def test_a_warp_far_outside_the_photo_is_its_edge_or_the_constant():
    gray = photo_like(40, 60)
    away = np.array([[1.0, 0.0, 500.0], [0.0, 1.0, 500.0]])  # the output starts 500 px beyond the photo
    assert (resample.warp_affine(gray, away, (20, 20), value=128) == 128).all()
    edge = resample.warp_affine(gray, away, (20, 20))
    assert (edge == gray[0, 0]).all()  # up and left of the photo: its top-left pixel repeated


def test_area_shrink_averages_like_opencv():
    gray = photo_like()
    for size in [(200, 150), (100, 75), (133, 100), (48, 48)]:
        expected = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        difference = np.abs(resample.area(gray, size).astype(int) - expected)
        # By a fractional factor OpenCV splits a source pixel between two outputs where Pillow gives it
        # to one: a few levels at a sharp edge, under one on average (this image changes fast).
        assert difference.max() <= 6 and difference.mean() < 1.0
    halves = gray.reshape(150, 2, 200, 2).mean((1, 3))  # a whole-number factor: block means, rounded
    assert np.abs(resample.area(gray, (200, 150)) - halves).max() <= 1


def test_linear_growth_and_padding():
    small = photo_like(30, 20)
    expected = cv2.resize(small, (48, 48), interpolation=cv2.INTER_LINEAR)
    assert np.abs(resample.linear(small, (48, 48)).astype(int) - expected).max() <= 1
    padded = resample.pad(small, 3)
    assert padded.shape == (36, 26) and (padded[:3, 3:-3] == small[0]).all()
    assert (resample.pad(small, 2, value=128)[:2] == 128).all()


def test_the_rotation_and_its_inverse():
    forward = resample.rotation((10.5, 20.0), 33.0, 1.7)
    assert np.allclose(forward, cv2.getRotationMatrix2D((10.5, 20.0), 33.0, 1.7), atol=1e-5)
    point = np.array([3.0, 4.0, 1.0])
    there = forward @ point
    assert np.allclose(resample.invert_affine(forward) @ np.append(there, 1.0), point[:2])
