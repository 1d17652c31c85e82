"""Explanation heatmaps: which regions of a 48×48 crop drove a class.

Grad-CAM (one forward and one backward pass through the Keras network) where TensorFlow is
installed; occlusion sensitivity where it is not (a lean install serves on LiteRT, which has no
gradients): every patch of the crop is greyed out in turn, all the masked copies go through the
served model in one batch, and a region is as hot as hiding it lowers the class's probability.
Computed only when a person asks.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

from facexpr.core.extras import installed
from facexpr.core.labels import CROP_SIZE
from facexpr.model.classifier import Classifier


def _feature_layer(network):
    """The last layer with a spatial map of at least 6×6: the most semantic one still local."""
    for layer in reversed(network.layers):
        shape = getattr(layer, "output", None) is not None and layer.output.shape
        if shape and len(shape) == 4 and shape[1] >= 6:
            return layer
    raise ValueError("the model has no convolutional feature map to explain")


def grad_cam(classifier: Classifier, crop: np.ndarray, class_index: int | None = None) -> np.ndarray:
    """(48, 48) float32 heatmap in [0, 1] for CLASS_INDEX (default: the predicted class)."""
    import keras
    import tensorflow as tf

    network = classifier.keras_network()  # loaded on first use when LiteRT serves
    cache = classifier.__dict__.setdefault("_cam_model", {})
    if "model" not in cache:
        cache["model"] = keras.Model(network.inputs, [_feature_layer(network).output, network.output])
    cam_model = cache["model"]
    x = tf.convert_to_tensor(np.asarray(crop, np.float32).reshape(1, CROP_SIZE, CROP_SIZE, 1))
    with tf.GradientTape() as tape:
        features, probs = cam_model(x, training=False)
        index = int(tf.argmax(probs[0])) if class_index is None else int(class_index)
        score = probs[0, index]
    grads = tape.gradient(score, features)[0]  # (h, w, c)
    weights = tf.reduce_mean(grads, axis=(0, 1))  # how much each channel matters for the class
    cam = tf.nn.relu(tf.reduce_sum(features[0] * weights, axis=-1)).numpy()
    cam = np.asarray(Image.fromarray(cam.astype(np.float32)).resize((CROP_SIZE, CROP_SIZE),
                                                                     Image.Resampling.BILINEAR))
    peak = float(cam.max())
    return (cam / peak if peak > 0 else np.zeros_like(cam)).astype(np.float32)


OCCLUSION_PATCH = 12  # px of 48: about an eye, or the mouth
OCCLUSION_STRIDE = 4  # 10 × 10 positions: 100 masked copies in one batch


def occlusion_map(classifier: Classifier, crop: np.ndarray, class_index: int | None = None,
                  patch: int = OCCLUSION_PATCH, stride: int = OCCLUSION_STRIDE) -> np.ndarray:
    """(48, 48) float32 heatmap in [0, 1]: how much greying out each region lowers CLASS_INDEX's
    probability (default: the predicted class). Needs only `classifier.predict` (any backend)."""
    crop = np.asarray(crop, np.uint8).reshape(CROP_SIZE, CROP_SIZE)
    starts = list(range(0, CROP_SIZE - patch + 1, stride))
    if starts[-1] != CROP_SIZE - patch:
        starts.append(CROP_SIZE - patch)  # the last row and column of pixels are covered too
    corners = [(y, x) for y in starts for x in starts]
    masked = np.repeat(crop[None], len(corners) + 1, axis=0)
    fill = np.uint8(round(float(crop.mean())))  # the crop's own mean grey: no new edge or brightness
    for i, (y, x) in enumerate(corners, start=1):
        masked[i, y:y + patch, x:x + patch] = fill
    probs = classifier.predict(masked)  # the crop itself first, then every masked copy
    index = int(probs[0].argmax()) if class_index is None else int(class_index)
    drop = np.clip(probs[0, index] - probs[1:, index], 0, None)
    heat = np.zeros((CROP_SIZE, CROP_SIZE), np.float64)
    covered = np.zeros_like(heat)
    for d, (y, x) in zip(drop, corners, strict=True):
        heat[y:y + patch, x:x + patch] += d
        covered[y:y + patch, x:x + patch] += 1
    heat /= np.maximum(covered, 1)
    peak = float(heat.max())
    return (heat / peak if peak > 0 else np.zeros_like(heat)).astype(np.float32)


def explain(classifier: Classifier, crop: np.ndarray,
            class_index: int | None = None) -> tuple[np.ndarray, Literal["Grad-CAM", "occlusion"]]:
    """The heatmap a person is shown, and its method: Grad-CAM with TensorFlow, else occlusion."""
    if installed("train"):  # Grad-CAM needs TensorFlow's gradients and the Keras network
        return grad_cam(classifier, crop, class_index), "Grad-CAM"
    return occlusion_map(classifier, crop, class_index), "occlusion"


def overlay(crop: np.ndarray, heat: np.ndarray, size: int = 192, alpha: float = 0.5) -> Image.Image:
    """The gray crop with the heatmap laid over it in red–yellow, enlarged for display."""
    gray = np.asarray(crop, np.float32)[..., None].repeat(3, axis=-1)
    h = np.clip(heat, 0, 1)[..., None]
    colour = np.concatenate([np.ones_like(h), h, np.zeros_like(h)], axis=-1) * 255  # red → yellow
    mixed = gray * (1 - alpha * h) + colour * alpha * h
    img = Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8))
    return img.resize((size, size), Image.Resampling.NEAREST)
