"""Fast inference for a trained network: the same function as the Keras model, cheaper to run.

Keras runs batch normalization as separate element-wise ops after each convolution. At
inference those are a fixed affine map, so they fold into the convolution's kernel and bias;
what is left (conv + bias + ReLU) runs as one fused oneDNN op per layer. The folded graph is
checked against the Keras model when it is built; anything it does not recognise (another
layer type, a branching topology) makes `compile_plan` return None and Keras serves as before.

Test-time flip averaging runs both views in one batched call rather than two. For one crop at a
time the folded graph is also converted to TFLite in memory (XNNPACK), which has less overhead
per call than TensorFlow's executor; it is checked against the folded graph the same way.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

AGREEMENT_TOL = 1e-3  # the folded graph must give the Keras model's probabilities within this
# bfloat16 keeps 8 significant bits per activation: on FER2013 val its probabilities move by
# 7e-4 on average, 1.6e-2 at most (benchmarks/). Beyond this the graph is wrong, not rounded.
BF16_TOL = 5e-2
_PROBE_N = 8


def has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX or AVX512-BF16); elsewhere it is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


@dataclass(frozen=True)
class Op:
    kind: str  # affine | conv | relu | maxpool | gap | dense | softmax
    params: dict[str, Any]


def _activation_name(layer: Any) -> str | None:
    act = getattr(layer, "activation", None)
    name = getattr(act, "__name__", None)
    return name if name in ("linear", "relu", "softmax") else None


def plan_network(network: Any) -> list[Op] | None:
    """The network as a flat op list with batch norm folded into the preceding convolution.

    None when a layer is not one of the plain kinds below, or the model is not a single chain.
    """
    from keras import layers

    ops: list[Op] = []
    previous_output = None
    for layer in network.layers:
        if isinstance(layer, layers.InputLayer):
            previous_output = layer.output
            continue
        # A single chain: each layer reads exactly the previous layer's output.
        if previous_output is not None and getattr(layer, "input", None) is not previous_output:
            return None
        previous_output = layer.output
        if isinstance(layer, layers.Rescaling):
            ops.append(Op("affine", {"scale": np.asarray(layer.scale, np.float64),
                                     "offset": np.asarray(layer.offset, np.float64)}))
        elif isinstance(layer, layers.Conv2D) and type(layer) is layers.Conv2D:
            plain = (layer.data_format == "channels_last" and layer.groups == 1
                     and tuple(layer.dilation_rate) == (1, 1))
            if not plain or _activation_name(layer) not in ("linear", "relu"):
                return None
            kernel = np.asarray(layer.kernel.numpy(), np.float64)
            bias = (np.asarray(layer.bias.numpy(), np.float64) if layer.use_bias
                    else np.zeros(kernel.shape[-1]))
            ops.append(Op("conv", {"kernel": kernel, "bias": bias, "strides": tuple(layer.strides),
                                   "padding": layer.padding.upper()}))
            if _activation_name(layer) == "relu":
                ops.append(Op("relu", {}))
        elif isinstance(layer, layers.BatchNormalization):
            if layer.axis not in (-1, [-1], 3, [3]) or getattr(layer, "renorm", False):
                return None
            mean = np.asarray(layer.moving_mean.numpy(), np.float64)
            scale = 1.0 / np.sqrt(np.asarray(layer.moving_variance.numpy(), np.float64) + layer.epsilon)
            if layer.scale:
                scale = scale * np.asarray(layer.gamma.numpy(), np.float64)
            shift = -mean * scale + (np.asarray(layer.beta.numpy(), np.float64) if layer.center else 0.0)
            last = ops[-1] if ops else None
            if last is not None and last.kind == "conv":
                # BN(conv(x) + b) = conv(x; k·s) + (b·s + shift): exact up to float rounding.
                last.params["kernel"] = last.params["kernel"] * scale
                last.params["bias"] = last.params["bias"] * scale + shift
            else:
                ops.append(Op("affine", {"scale": scale, "offset": shift}))
        elif isinstance(layer, layers.ReLU):
            if layer.max_value is not None or layer.negative_slope != 0 or layer.threshold != 0:
                return None
            ops.append(Op("relu", {}))
        elif isinstance(layer, layers.Activation) and _activation_name(layer) is not None:
            if _activation_name(layer) != "linear":
                ops.append(Op(_activation_name(layer) or "", {}))
        elif isinstance(layer, layers.MaxPooling2D):
            if layer.data_format != "channels_last":
                return None
            ops.append(Op("maxpool", {"size": tuple(layer.pool_size), "strides": tuple(layer.strides),
                                      "padding": layer.padding.upper()}))
        elif isinstance(layer, layers.GlobalAveragePooling2D):
            if layer.data_format != "channels_last" or layer.keepdims:
                return None
            ops.append(Op("gap", {}))
        elif isinstance(layer, layers.Dropout):
            continue  # identity at inference
        elif isinstance(layer, layers.Dense) and type(layer) is layers.Dense:
            if _activation_name(layer) is None:
                return None
            bias = layer.bias.numpy() if layer.use_bias else np.zeros(layer.units)
            ops.append(Op("dense", {"kernel": np.asarray(layer.kernel.numpy(), np.float64),
                                    "bias": np.asarray(bias, np.float64)}))
            if _activation_name(layer) != "linear":
                ops.append(Op(_activation_name(layer) or "", {}))
        elif isinstance(layer, layers.Softmax):
            if layer.axis not in (-1, [-1]):
                return None
            ops.append(Op("softmax", {}))
        else:
            return None
    return ops


def _plan_fn(ops: list[Op], dtype: Any = None):
    """ops → a function of a float32 NHWC batch; convolutions run in DTYPE (float32 by default).

    Weights become graph constants, so oneDNN can pre-pack them once.
    """
    import tensorflow as tf

    dtype = dtype or tf.float32
    consts: list[dict[str, Any]] = []
    for op in ops:
        p = dict(op.params)
        if op.kind == "conv":
            p["kernel"] = tf.constant(p["kernel"].astype(np.float32), dtype=dtype)
            p["bias"] = tf.constant(p["bias"].astype(np.float32), dtype=dtype)
        elif op.kind == "dense":  # the head stays float32, as in the served model
            p["kernel"] = tf.constant(p["kernel"].astype(np.float32))
            p["bias"] = tf.constant(p["bias"].astype(np.float32))
        elif op.kind == "affine":
            p["scale"] = np.asarray(p["scale"], np.float32)
            p["offset"] = np.asarray(p["offset"], np.float32)
        consts.append(p)

    def run(x):
        h = x
        for op, p in zip(ops, consts, strict=True):
            if op.kind == "affine":
                h = h * tf.cast(p["scale"], h.dtype) + tf.cast(p["offset"], h.dtype)
            elif op.kind == "conv":
                h = tf.nn.bias_add(tf.nn.conv2d(tf.cast(h, dtype), p["kernel"], p["strides"], p["padding"]),
                                   p["bias"])
            elif op.kind == "relu":
                h = tf.nn.relu(h)
            elif op.kind == "maxpool":
                h = tf.nn.max_pool2d(h, p["size"], p["strides"], p["padding"])
            elif op.kind == "gap":
                h = tf.reduce_mean(h, axis=[1, 2])
            elif op.kind == "dense":
                h = tf.matmul(tf.cast(h, tf.float32), p["kernel"]) + p["bias"]
            elif op.kind == "softmax":
                h = tf.nn.softmax(tf.cast(h, tf.float32), axis=-1)
        return tf.cast(h, tf.float32)

    return run


def flip_averaged(fn):
    """fn(x) averaged with fn(mirror of x), both views in one batched call."""
    import tensorflow as tf

    def run(x):
        n = tf.shape(x)[0]
        probs = fn(tf.concat([x, tf.reverse(x, axis=[2])], axis=0))
        return (probs[:n] + probs[n:]) / 2.0

    return run


def keras_forward(network: Any, flip_average: bool):
    """The reference: the Keras model itself, with the same flip averaging."""
    fn = lambda x: network(x, training=False)  # noqa: E731
    return flip_averaged(fn) if flip_average else fn


def compile_plan(network: Any, input_shape: tuple[int, ...], flip_average: bool, dtype: Any = None,
                 check: bool = True):
    """A tf.function (fixed signature [None, *input_shape] float32) computing the folded network.

    None when the network cannot be folded, or (CHECK) when the folded graph differs from Keras
    by more than a tenth of AGREEMENT_TOL (BF16_TOL for bfloat16) on a probe batch — never a
    silently different answer.
    """
    import tensorflow as tf

    ops = plan_network(network)
    if ops is None:
        return None
    fn = _plan_fn(ops, dtype)
    fn = flip_averaged(fn) if flip_average else fn
    compiled = tf.function(fn, input_signature=[tf.TensorSpec([None, *input_shape], tf.float32)])
    if check:
        probe = np.random.default_rng(0).integers(0, 256, (_PROBE_N, *input_shape)).astype(np.float32)
        reference = keras_forward(network, flip_average)(tf.constant(probe)).numpy()
        tol = AGREEMENT_TOL / 10 if dtype in (None, tf.float32) else BF16_TOL
        if not np.allclose(compiled(probe).numpy(), reference, atol=tol, rtol=0):
            return None
    return compiled


class LiteForward:
    """A compiled graph converted to TFLite in memory, for one crop at a time.

    XNNPACK runs a batch of one (two with flip averaging) with less per-call overhead than
    TensorFlow's executor. The interpreter is not thread-safe: a caller that finds it busy
    gets None and uses the tf.function instead of waiting.
    """

    def __init__(self, tflite_model: bytes, input_shape: tuple[int, ...],
                 num_threads: int | None = None) -> None:
        import os

        import tensorflow as tf

        with warnings.catch_warnings():  # tf.lite.Interpreter warns that LiteRT is its successor
            warnings.simplefilter("ignore")
            self._interpreter = tf.lite.Interpreter(model_content=tflite_model,
                                                    num_threads=num_threads or os.cpu_count() or 1)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._interpreter.resize_tensor_input(self._input, [1, *input_shape])
        self._interpreter.allocate_tensors()
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray | None:
        if not self._lock.acquire(blocking=False):
            return None
        try:
            self._interpreter.set_tensor(self._input, x)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output).copy()
        finally:
            self._lock.release()


def to_lite(compiled: Any, input_shape: tuple[int, ...]) -> LiteForward | None:
    """COMPILED (a tf.function from compile_plan, already traced) as a TFLite interpreter for one
    input, checked against it on a probe; None where conversion is unavailable or disagrees.

    COMPILED itself agrees with Keras within AGREEMENT_TOL / 10, so this does within twice that.
    """
    import tensorflow as tf

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converter = tf.lite.TFLiteConverter.from_concrete_functions([compiled.get_concrete_function()])
            flat = converter.convert()
        lite = LiteForward(flat, input_shape)
    except Exception:  # no converter or interpreter (tf.lite is being retired): the tf.function serves
        return None
    probe = np.random.default_rng(1).integers(0, 256, (1, *input_shape)).astype(np.float32)
    got = lite(probe)
    if got is None or not np.allclose(got, compiled(probe).numpy(), atol=AGREEMENT_TOL / 10, rtol=0):
        return None
    return lite
