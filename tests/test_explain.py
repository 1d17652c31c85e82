"""Explanation heatmaps: Grad-CAM's shape, range, class dependence; occlusion finds what the model
looks at, and is what a person gets without TensorFlow."""

import sys
import time

import numpy as np

from facexpr.model.explain import explain, grad_cam, occlusion_map, overlay
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


class _LooksAtOnePatch:
    """A stand-in model whose "happy" rises with the brightness of rows 30–39, columns 8–17 only."""

    def predict(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops, np.float32).reshape(-1, 48, 48)
        happy = crops[:, 30:40, 8:18].mean(axis=(1, 2)) / 255
        probs = np.repeat(((1 - happy) / 6)[:, None], 7, axis=1)
        probs[:, 3] = happy
        return probs


def test_occlusion_highlights_the_patch_the_model_looks_at():
    crop = np.random.default_rng(0).integers(60, 90, (48, 48)).astype(np.uint8)
    crop[30:40, 8:18] = 240  # the planted patch
    crop[5:15, 30:40] = 240  # as bright, but the model ignores it
    heat = occlusion_map(_LooksAtOnePatch(), crop)
    assert heat.shape == (48, 48) and heat.dtype == np.float32 and heat.max() == 1.0
    y, x = np.unravel_index(heat.argmax(), heat.shape)
    assert 30 <= y < 40 and 8 <= x < 18
    assert heat[30:40, 8:18].mean() > 0.5 and heat[5:15, 30:40].max() == 0.0


def test_occlusion_runs_on_the_lite_model_in_one_batch(tiny_classifier, astronaut_bytes, monkeypatch):
    assert tiny_classifier.backend == "lite"
    _, _, (crop,) = find_crops(decode_gray(astronaut_bytes))
    calls = []
    real = tiny_classifier.predict
    monkeypatch.setattr(tiny_classifier, "predict", lambda x: calls.append(len(x)) or real(x))
    started = time.perf_counter()
    heat = occlusion_map(tiny_classifier, crop)
    assert time.perf_counter() - started < 5
    assert calls == [101]  # the crop and its 100 masked copies, one call
    assert heat.min() >= 0 and heat.max() <= 1


def test_without_tensorflow_the_explanation_is_occlusion(tiny_classifier, astronaut_bytes, monkeypatch):
    _, _, (crop,) = find_crops(decode_gray(astronaut_bytes))
    assert explain(tiny_classifier, crop)[1] == "Grad-CAM"
    for module in ("keras", "tensorflow"):
        monkeypatch.setitem(sys.modules, module, None)
    heat, method = explain(tiny_classifier, crop)
    assert method == "occlusion"
    np.testing.assert_array_equal(heat, occlusion_map(tiny_classifier, crop))
