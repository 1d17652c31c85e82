"""Grad-CAM heatmaps: shape, range, class dependence."""

import numpy as np

from facexpr.model.explain import grad_cam, overlay
from facexpr.photo.faces import find_crops
from facexpr.photo.imaging import decode_gray


def test_heatmap_has_crop_shape_and_unit_range(tiny_classifier, astronaut_bytes):
    _, _, (crop,) = find_crops(decode_gray(astronaut_bytes))
    heat = grad_cam(tiny_classifier, crop)
    assert heat.shape == (48, 48) and heat.dtype == np.float32
    assert heat.min() >= 0 and heat.max() <= 1 and heat.max() > 0


def test_heatmap_differs_between_classes(tiny_classifier, astronaut_bytes):
    _, _, (crop,) = find_crops(decode_gray(astronaut_bytes))
    maps = [grad_cam(tiny_classifier, crop, k) for k in range(7)]
    assert any(not np.allclose(maps[0], m, atol=1e-3) for m in maps[1:])


def test_overlay_is_an_enlarged_colour_image(tiny_classifier):
    crop = np.full((48, 48), 100, np.uint8)
    heat = np.zeros((48, 48), np.float32)
    heat[:24] = 1.0
    img = np.asarray(overlay(crop, heat, size=96))
    assert img.shape == (96, 96, 3)
    assert img[10, 10, 0] > img[10, 10, 2]  # hot region is red-tinted
    assert tuple(img[80, 80]) == (100, 100, 100)  # cold region keeps the gray pixel
