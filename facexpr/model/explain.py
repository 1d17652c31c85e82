"""Explanation heatmaps: which regions of a 48×48 crop drove a class (Grad-CAM).

Computed only when a person asks: it costs one forward and one backward pass per face.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

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

    network = classifier.network
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


def overlay(crop: np.ndarray, heat: np.ndarray, size: int = 192, alpha: float = 0.5) -> Image.Image:
    """The gray crop with the heatmap laid over it in red–yellow, enlarged for display."""
    gray = np.asarray(crop, np.float32)[..., None].repeat(3, axis=-1)
    h = np.clip(heat, 0, 1)[..., None]
    colour = np.concatenate([np.ones_like(h), h, np.zeros_like(h)], axis=-1) * 255  # red → yellow
    mixed = gray * (1 - alpha * h) + colour * alpha * h
    img = Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8))
    return img.resize((size, size), Image.Resampling.NEAREST)
