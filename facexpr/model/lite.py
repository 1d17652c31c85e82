"""The served model on LiteRT: a model's `.tflite` beside its `.keras`, run without TensorFlow.

`facexpr.model.export` writes the file (the folded, flip-averaged network, int8 dynamic-range
weights) and records it in the card's `lite` section with its sha256; this module only reads
and runs it, with `ai_edge_litert` (a 22 MB wheel) instead of TensorFlow (1.3 GB), so a lean
install answers. Nothing here imports TensorFlow or Keras.
"""

from __future__ import annotations

import hashlib
import os
import queue
from pathlib import Path
from typing import Any

import numpy as np

from facexpr.core.errors import ModelError
from facexpr.core.labels import CROP_SIZE

SUFFIX = ".tflite"
# Crops per invoke (×2 inside: both flips). Small batches keep each layer's activations in cache:
# on the 2-core EPYC, 8–16 gave ~10 % more faces/s than 64 or 128 (benchmarks/RESULTS.md).
BATCH = 16
# Threads of a batch interpreter: XNNPACK splits each conv across two cores where there are two.
# One crop runs on one thread (splitting 1 ms of work costs more than it gains under load);
# concurrent requests still use every core, each on an interpreter of its own from the pool.
THREADS = max(1, min(2, os.cpu_count() or 1))


def lite_path(model_path: str | os.PathLike) -> Path:
    """Where a model's LiteRT file lies: NAME.tflite beside NAME.keras."""
    return Path(model_path).with_suffix(SUFFIX)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def matching_lite_file(model_path: str | os.PathLike, lite_section: Any) -> Path | None:
    """The model's .tflite when it exists and is the file its card vouches for (same sha256);
    None otherwise (no file, no `lite` section, or a file from another export)."""
    path = lite_path(model_path)
    if not path.is_file() or not isinstance(lite_section, dict) or not lite_section.get("sha256"):
        return None
    return path if file_sha256(path) == lite_section["sha256"] else None


class LiteRuntime:
    """A `.tflite` classifier: float32 crops (N, 48, 48, 1) in 0..255 → (N, 7) probabilities.

    A LiteRT interpreter must not be invoked from two threads at once, so each call takes an idle
    one from a pool (a new one when all are busy; only as many exist as ever ran at once). Single
    crops and batches keep separate pools, so neither resizes the other's tensors back and forth.
    """

    def __init__(self, model: bytes, num_threads: int = THREADS) -> None:
        self._model = model
        self._threads = num_threads
        self._idle: dict[int, queue.SimpleQueue] = {1: queue.SimpleQueue(), BATCH: queue.SimpleQueue()}
        # Load one now: a broken file fails at load time, not on the first request.
        self._idle[1].put(self._new(1))

    @classmethod
    def from_file(cls, path: str | os.PathLike, num_threads: int = THREADS) -> LiteRuntime:
        try:
            return cls(Path(path).read_bytes(), num_threads)
        except OSError as exc:
            raise ModelError(f"The LiteRT model {path} cannot be read: {exc.strerror or exc}.") from exc

    def _new(self, rows: int) -> Any:
        from ai_edge_litert.interpreter import Interpreter

        try:
            threads = 1 if rows == 1 else self._threads
            interpreter = Interpreter(model_content=self._model, num_threads=threads)
            detail = interpreter.get_input_details()[0]
            if tuple(detail["shape"][1:]) != (CROP_SIZE, CROP_SIZE, 1):
                raise ValueError(f"it takes {tuple(detail['shape'])}, not 48×48 gray crops")
            interpreter.resize_tensor_input(detail["index"], [rows, CROP_SIZE, CROP_SIZE, 1])
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"The LiteRT model cannot be loaded: {exc}") from exc
        return interpreter

    def _run(self, interpreter: Any, x: np.ndarray) -> np.ndarray:
        detail = interpreter.get_input_details()[0]
        if detail["shape"][0] != len(x):  # the last, short chunk of a batch (0.2 ms to resize)
            interpreter.resize_tensor_input(detail["index"], [len(x), CROP_SIZE, CROP_SIZE, 1])
            interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], np.ascontiguousarray(x, np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        pool = self._idle[1 if len(x) == 1 else BATCH]
        try:
            interpreter = pool.get_nowait()
        except queue.Empty:
            interpreter = self._new(1 if len(x) == 1 else BATCH)
        try:
            return np.concatenate([self._run(interpreter, x[i:i + BATCH]) for i in range(0, len(x), BATCH)])
        finally:
            pool.put(interpreter)
