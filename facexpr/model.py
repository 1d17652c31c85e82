"""The Keras network, its model card, and batch prediction on 48×48 face crops.

The network takes raw 8-bit gray pixels (0..255) and scales them itself, so every caller
feeds the same thing: crops straight from `faces`.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facexpr.errors import ModelError
from facexpr.labels import CROP_SIZE, EXPRESSIONS, NUM_CLASSES

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of CLI output

BATCH_SIZE = 128  # crops per call (×2 with flip averaging): throughput is flat from 64 up (benchmarks/)
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
PRECISIONS = ("float32", "bfloat16")  # of batched predictions; single crops always run in float32


def build_network(widths: tuple[int, ...] = (32, 64, 128, 256), dropout: float = 0.4, seed: int = 0):
    """VGG-style net: per stage two 3×3 conv + batch norm + ReLU, then 2×2 max-pool.

    Global average pooling keeps the head small, so the file stays a few MB.
    """
    import keras
    from keras import layers

    init = keras.initializers.HeNormal(seed=seed)
    inputs = keras.Input((CROP_SIZE, CROP_SIZE, 1), name="pixels")
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    size = CROP_SIZE
    for stage, width in enumerate(widths):
        for conv in range(2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer=init,
                              name=f"s{stage}_conv{conv}")(x)
            x = layers.BatchNormalization(name=f"s{stage}_bn{conv}")(x)
            x = layers.ReLU(name=f"s{stage}_relu{conv}")(x)
        if size >= 6:  # pool down to 3×3 at the smallest; a 5th stage works on the 3×3 map as is
            x = layers.MaxPooling2D(name=f"s{stage}_pool")(x)
            size //= 2
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, seed=seed, name="dropout")(x)
    # Logits in float32 even under a mixed-precision policy: softmax in bf16 is too coarse.
    logits = layers.Dense(NUM_CLASSES, kernel_initializer=init, dtype="float32", name="logits")(x)
    outputs = layers.Softmax(dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name="facexpr_vgg")


def card_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def read_card(model_path: Path) -> dict[str, Any]:
    """The model card beside MODEL_PATH ({} when there is none), named after the file by default."""
    path = card_path(Path(model_path))
    card = json.loads(path.read_text()) if path.exists() else {}
    card.setdefault("name", Path(model_path).stem)
    return card


def newest_model(models_dir: Path = MODELS_DIR) -> Path:
    """The model whose card is newest (by its `trained_at`), i.e. the shipped default."""
    cards = []
    for card_file in models_dir.glob("*.json"):
        keras_file = card_file.with_suffix(".keras")
        if not keras_file.exists():
            continue
        try:
            trained_at = json.loads(card_file.read_text()).get("trained_at", "")
        except (OSError, ValueError):
            continue
        cards.append((trained_at, keras_file.name, keras_file))
    if not cards:
        raise ModelError(f"No model found in {models_dir}: train one with `python -m facexpr train`.")
    return max(cards)[2]


def list_models(models_dir: Path = MODELS_DIR) -> list[Path]:
    """Every servable model (a .keras file with its card), newest first."""
    found = [p for p in models_dir.glob("*.keras") if card_path(p).exists()]
    return sorted(found, key=lambda p: json.loads(card_path(p).read_text()).get("trained_at", ""),
                  reverse=True)


@dataclass
class Classifier:
    """A loaded model and its card; `predict` maps crops to class probabilities.

    `fast` (the default) serves a compiled copy of the network with batch norm folded into the
    convolutions, and a TFLite copy for single crops; both are checked to give the Keras
    model's probabilities within 1e-3 (facexpr.inference). fast=False runs Keras itself.

    precision="bfloat16" runs batches of crops (not single crops) in bfloat16, about 5× faster
    on CPUs with AMX; probabilities move by up to ~2e-2 and a near-tie can change its answer.
    Only offered where the CPU has native bfloat16 (elsewhere it would be slower).
    """

    network: Any
    card: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    flip_average: bool = True
    fast: bool = True
    precision: str = "float32"

    def __post_init__(self) -> None:
        import tensorflow as tf

        from facexpr.inference import compile_plan, has_native_bf16, keras_forward

        if self.precision not in PRECISIONS:
            raise ModelError(f"Unknown precision {self.precision!r}; choose {' or '.join(PRECISIONS)}.")

        shape = (CROP_SIZE, CROP_SIZE, 1)
        forward = compile_plan(self.network, shape, self.flip_average) if self.fast else None
        # One traced graph with a fixed signature: no retracing per batch size, no Keras
        # call overhead per request.
        self._forward = forward or tf.function(keras_forward(self.network, self.flip_average),
                                               input_signature=[tf.TensorSpec([None, *shape], tf.float32)])
        self.backend = "folded" if forward is not None else "keras"
        self._batch_forward = self._forward
        if self.precision == "bfloat16":
            if not has_native_bf16():
                raise ModelError("This CPU has no native bfloat16 (AMX or AVX512-BF16): bfloat16 would be "
                                 "slower than float32 here. Use precision float32.")
            bulk = compile_plan(self.network, shape, self.flip_average, dtype=tf.bfloat16)
            if bulk is None:
                raise ModelError(f"Model {self.version} cannot run in bfloat16 (its layers do not fold "
                                 "into the compiled graph). Use precision float32.")
            self._batch_forward = bulk
        self._single: Any = None  # the TFLite copy for one crop, made on the first single-crop call
        self._single_lock = threading.Lock()

    def _single_crop_forward(self) -> Any:
        """The TFLite copy, converted once (~0.2 s) where folding worked; else None."""
        from facexpr.inference import to_lite

        if self._single is None and self.backend == "folded":
            with self._single_lock:
                if self._single is None:
                    self._single = to_lite(self._forward, (CROP_SIZE, CROP_SIZE, 1)) or False
        return self._single or None

    @property
    def version(self) -> str:
        return str(self.card.get("name") or (self.path.stem if self.path else "unsaved"))

    def predict(self, crops: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """crops: (N, 48, 48) uint8 → (N, 7) float probabilities summing to 1."""
        crops = np.asarray(crops)
        if crops.ndim == 2:
            crops = crops[None]
        if crops.ndim != 3 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE):
            raise ValueError(f"expected (N, {CROP_SIZE}, {CROP_SIZE}) crops, got {crops.shape}")
        if len(crops) == 0:
            return np.zeros((0, NUM_CLASSES), np.float32)
        x = crops.astype(np.float32)[..., None]
        single = self._single_crop_forward() if len(x) == 1 else None
        if single is not None:
            probs = single(x)
            if probs is not None:  # None: another thread holds the interpreter
                return probs.astype(np.float32)
        out = [self._batch_forward(x[i:i + batch_size]).numpy() for i in range(0, len(x), batch_size)]
        return np.concatenate(out).astype(np.float32)


def load_classifier(path: str | os.PathLike | None = None, precision: str = "float32") -> Classifier:
    """Load a `.keras` model and its JSON card; default is the newest card in models/."""
    import keras

    model_path = Path(path) if path else newest_model()
    if not model_path.exists():
        raise ModelError(f"Model file {model_path} does not exist (check FACEXPR_MODEL).")
    try:
        network = keras.models.load_model(model_path, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file; all mean the same here
        raise ModelError(f"Could not load model {model_path}: {exc}") from exc
    card = read_card(model_path)
    card.setdefault("classes", list(EXPRESSIONS))
    if list(card["classes"]) != list(EXPRESSIONS):
        raise ModelError(f"Model {model_path} predicts {card['classes']}, not the seven expressions.")
    classifier = Classifier(network=network, card=card, path=model_path, precision=precision)
    classifier.predict(np.zeros((1, CROP_SIZE, CROP_SIZE), np.uint8))  # trace now, not on the first request
    return classifier


RESERVED_CARD_KEYS = frozenset({"name", "trained_at", "classes", "input", "data", "recipe", "parameters",
                                "seed", "epochs", "wall_time_s", "machine", "val", "history"})


def add_to_card(model_path: Path, section: str, figures: dict[str, Any]) -> None:
    """Record an evaluation under SECTION of the model's card (training's own entries stay as written)."""
    if section in RESERVED_CARD_KEYS:
        raise ModelError(f"{section!r} is written by training; choose another card section name.")
    path = card_path(Path(model_path))
    card = json.loads(path.read_text()) if path.exists() else {}
    card[section] = figures
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    tmp.replace(path)  # all or nothing: a card is never left half-written


def save_model(network: Any, card: dict[str, Any], out: Path) -> Path:
    """Write OUT.keras and OUT.json side by side; returns the .keras path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    keras_path = out.with_suffix(".keras")
    network.save(keras_path)
    card_path(keras_path).write_text(json.dumps(card, indent=2) + "\n")
    return keras_path
