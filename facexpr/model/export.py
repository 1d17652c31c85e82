"""Export a Keras network to the LiteRT file that serves it (`NAME.tflite` beside `NAME.keras`).

What is converted is what the Keras path serves: the network with batch norm folded into its
convolutions (facexpr.model.inference) and test-time flip averaging built in, so one invoke gives
the final probabilities. Weights are stored as int8 with dynamic-range quantization: activations
stay float32 and no representative data set is needed, so every model gets its file where it is
saved. On FER2013 val (issue 24, and `facexpr export --val-data` on the shipped model) it keeps
accuracy within 0.1 point at 3–4× the folded graph's speed; full int8 was no faster here and moved
probabilities three times as far (benchmarks/RESULTS.md).

The file is checked against the Keras model before it is kept: on a probe set the probabilities
must agree within PROBE_MAX_ABS_DIFF and the top answer on PROBE_MIN_TOP1 of the crops, and where
labelled validation crops are given their accuracy within VAL_MAX_DROP. Needs TensorFlow
(`facexpr[train]`), imported only when a model is exported.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from facexpr.core.errors import ModelError
from facexpr.core.labels import CROP_SIZE
from facexpr.model.lite import SUFFIX, LiteRuntime, file_sha256, lite_path

QUANTIZATION = "int8 dynamic-range (weights int8, activations float32)"
PROBE_MAX_ABS_DIFF = 0.05  # int8 weights move a probability by ~0.02 at most on FER2013 val
PROBE_MIN_TOP1 = 0.97  # near-ties may flip; more than 3 % of answers changing is a broken file
VAL_MAX_DROP = 0.002  # accuracy on labelled crops may fall by at most 0.2 points
PROBE_N = 256
_SHAPE = (CROP_SIZE, CROP_SIZE, 1)


def probe_crops(n: int = PROBE_N, seed: int = 0) -> np.ndarray:
    """Face-free probe crops when no real ones are at hand: smooth random blobs, gradients and
    noise (uint8, (N, 48, 48)), so the net sees a spread of inputs rather than white noise only."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, (n, 6, 6)).astype(np.float32)
    smooth = np.kron(low, np.ones((8, 8), np.float32))  # 6×6 blocks up to 48×48
    ramp = np.linspace(0, 1, CROP_SIZE, dtype=np.float32)[None, None, :] * rng.uniform(-80, 80, (n, 1, 1))
    noise = rng.normal(0, rng.uniform(0, 40, (n, 1, 1)), (n, CROP_SIZE, CROP_SIZE))
    return np.clip(smooth + ramp + noise, 0, 255).astype(np.uint8)


def _served_function(network: Any) -> Any:
    """The flip-averaged network as a traced tf.function: the folded graph, else Keras itself."""
    import tensorflow as tf

    from facexpr.model.inference import compile_plan, keras_forward

    folded = compile_plan(network, _SHAPE, flip_average=True)
    if folded is not None:
        return folded
    signature = [tf.TensorSpec([None, *_SHAPE], tf.float32)]
    return tf.function(keras_forward(network, True), input_signature=signature)


def convert(network: Any) -> bytes:
    """NETWORK (flip-averaged, folded) as LiteRT bytes with int8 dynamic-range weights."""
    import tensorflow as tf

    fn = _served_function(network)
    with warnings.catch_warnings():  # tf.lite warns that LiteRT is its successor
        warnings.simplefilter("ignore")
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        try:
            return converter.convert()
        except Exception as exc:  # the converter raises many kinds; all mean "no file"
            raise ModelError(f"The network could not be converted to LiteRT: {exc}") from exc


def _keras_probabilities(network: Any, crops: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    from facexpr.model.inference import keras_forward

    forward = keras_forward(network, True)
    x = crops.astype(np.float32)[..., None]
    return np.concatenate([forward(tf.constant(x[i:i + 256])).numpy() for i in range(0, len(x), 256)])


def export_lite(network: Any, keras_path: str | os.PathLike, probe: np.ndarray | None = None,
                val: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Write KERAS_PATH's `.tflite` from NETWORK, checked against NETWORK; returns the card's `lite`
    section. PROBE: uint8 crops (N, 48, 48) to compare on (default: `probe_crops`); VAL: labelled
    crops (images, labels) whose accuracy must hold. ModelError (and no file) when a check fails."""
    target = lite_path(keras_path)
    flat = convert(network)
    runtime = LiteRuntime(flat)
    probe = probe_crops() if probe is None else np.asarray(probe, np.uint8)
    reference = _keras_probabilities(network, probe)
    got = runtime(probe.astype(np.float32)[..., None])
    max_diff = float(np.abs(got - reference).max())
    top1 = float((got.argmax(1) == reference.argmax(1)).mean())
    section: dict[str, Any] = {
        "file": target.name, "runtime": "ai-edge-litert", "quantization": QUANTIZATION,
        "flip_average": True, "bytes": len(flat),
        "probe": {"n": len(probe), "max_abs_diff": round(max_diff, 6), "top1_agreement": round(top1, 4),
                  "tolerance": {"max_abs_diff": PROBE_MAX_ABS_DIFF, "top1_agreement": PROBE_MIN_TOP1}},
    }
    problems = []
    if max_diff > PROBE_MAX_ABS_DIFF or top1 < PROBE_MIN_TOP1:
        problems.append(f"on {len(probe)} probe crops its probabilities differ by up to {max_diff:.4f} "
                        f"and it agrees on {top1:.1%} of answers (allowed: {PROBE_MAX_ABS_DIFF}, "
                        f"{PROBE_MIN_TOP1:.0%})")
    if val is not None:
        images, labels = np.asarray(val[0], np.uint8), np.asarray(val[1])
        keras_acc = float((_keras_probabilities(network, images).argmax(1) == labels).mean())
        lite_acc = float((runtime(images.astype(np.float32)[..., None]).argmax(1) == labels).mean())
        section["val"] = {"n": len(labels), "keras_accuracy": round(keras_acc, 4),
                          "lite_accuracy": round(lite_acc, 4), "max_drop": VAL_MAX_DROP}
        if keras_acc - lite_acc > VAL_MAX_DROP:
            problems.append(f"its validation accuracy is {lite_acc:.4f} against Keras' {keras_acc:.4f}")
    if problems:
        raise ModelError(f"The LiteRT export of {Path(keras_path).name} was not kept: "
                         + "; ".join(problems) + ".")
    tmp = target.with_suffix(SUFFIX + ".tmp")
    tmp.write_bytes(flat)
    tmp.replace(target)  # whole or not at all: a server may be reading the old one
    section["sha256"] = file_sha256(target)
    return section
