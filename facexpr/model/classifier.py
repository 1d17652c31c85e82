"""The network, its model card (`ModelCard`), and batch prediction on 48×48 face crops: served
from the model's LiteRT file (facexpr.model.lite) where it has one, else through TensorFlow.

The network takes raw 8-bit gray pixels (0..255) and scales them itself, so every caller
feeds the same thing: crops straight from `faces`."""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from facexpr.core.errors import ModelError
from facexpr.core.extras import install_hint
from facexpr.core.labels import CROP_SIZE, EXPRESSIONS, NUM_CLASSES
from facexpr.core.times import utc
from facexpr.model.lite import LiteRuntime, lite_path, matching_lite_file
from facexpr.photo.geometry import CropGeometry

log = logging.getLogger(__name__)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of CLI output

BATCH_SIZE = 128  # crops per call (×2 with flip averaging): throughput is flat from 64 up (benchmarks/)
CHECKOUT_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"  # the app's, in a checkout
PACKAGE_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"  # the shipped model, in an installed copy


def default_models_dir() -> Path:
    """Where the default model is looked for: the checkout's models/ when facexpr runs from a
    checkout (the app, the tests, training), else the copy installed inside the package."""
    in_checkout = (CHECKOUT_MODELS_DIR.parent / "streamlit_app.py").is_file()
    return CHECKOUT_MODELS_DIR if in_checkout and CHECKOUT_MODELS_DIR.is_dir() else PACKAGE_MODELS_DIR


MODELS_DIR = default_models_dir()
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


# ---------------------------------------------------------------- the model card

@dataclass
class Scores:
    """An evaluation as a card records it (`val`, or a section `evaluate --add-to-card` wrote)."""

    n: int | None = None
    accuracy: float | None = None
    macro_f1: float | None = None
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)  # expression → precision … support
    confusion: list[list[int]] = field(default_factory=list)  # rows: true class, FER2013 order
    extra: dict[str, Any] = field(default_factory=dict)  # anything else written beside them, kept as written

    @classmethod
    def from_dict(cls, value: Any, where: str = "the card") -> Scores:
        if not isinstance(value, dict):
            raise ModelError(f"{where} has scores that are not a JSON object.")
        known = {"n", "accuracy", "macro_f1", "per_class", "confusion"}
        try:
            return cls(n=None if value.get("n") is None else int(value["n"]),
                       accuracy=_number(value.get("accuracy")), macro_f1=_number(value.get("macro_f1")),
                       per_class=dict(value.get("per_class") or {}),
                       confusion=[[int(c) for c in row] for row in value.get("confusion") or []],
                       extra={k: v for k, v in value.items() if k not in known})
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{where} has unreadable scores: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        figures = {"n": self.n, "accuracy": self.accuracy, "macro_f1": self.macro_f1,
                   "per_class": self.per_class, "confusion": self.confusion}
        return {**{k: v for k, v in figures.items() if v not in (None, {}, [])}, **self.extra}


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


# What training writes: typed fields, then the sections `evaluate --add-to-card` may not take over.
RESERVED_CARD_KEYS = frozenset({"name", "trained_at", "classes", "input", "crop", "data", "recipe",
                                "augmentation", "parameters", "seed", "epochs", "wall_time_s", "machine",
                                "val", "history", "init_from", "lite"})
_TYPED = ("name", "trained_at", "classes", "crop", "data", "epochs", "wall_time_s", "val")
# The order a new card is written in: what it is, what it learnt from, how, how well.
_CARD_ORDER = ("name", "trained_at", "classes", "input", "crop", "data", "init_from", "recipe",
               "augmentation", "parameters", "seed", "epochs", "wall_time_s", "machine", "val", "history")


@dataclass
class ModelCard:
    """What a model file's JSON card says: parsed and checked once (`from_dict`), typed where code
    reads it. Every other section (`input`, `recipe`, `machine`, `history`, `photos`, and any a
    later tool adds) rides in `sections` as written, so reading and writing a card loses nothing."""

    name: str = ""
    trained_at: datetime | None = None
    classes: tuple[str, ...] = EXPRESSIONS
    # How photos' faces are cut for this model (facexpr.photo.geometry); a card without one
    # predates alignment and keeps the Haar box it was served with.
    crop: CropGeometry | None = None
    data: dict[str, Any] = field(default_factory=dict)  # train / val / relabeled (/ ferplus): source, counts
    epochs: int | None = None
    wall_time_s: float | None = None
    val: Scores = field(default_factory=Scores)
    sections: dict[str, Any] = field(default_factory=dict)
    _order: tuple[str, ...] = field(default=_CARD_ORDER, repr=False, compare=False)  # key order as read

    @classmethod
    def from_dict(cls, raw: Any, default_name: str = "") -> ModelCard:
        """Check RAW (a card's JSON object); ModelError names what is wrong."""
        where = f"The model card of {default_name or 'this model'}"
        if not isinstance(raw, dict):
            raise ModelError(f"{where} is not a JSON object.")
        try:
            trained_at = utc(raw.get("trained_at"))
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{where} has a trained_at that is not an ISO time: "
                             f"{raw['trained_at']!r}.") from exc
        classes = tuple(raw.get("classes") or EXPRESSIONS)
        if classes != EXPRESSIONS:
            raise ModelError(f"{where} predicts {list(classes)}, not the seven expressions.")
        try:
            epochs = None if raw.get("epochs") is None else int(raw["epochs"])
            wall = _number(raw.get("wall_time_s"))
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{where} has an unreadable epochs or wall_time_s: {exc}") from exc
        data = raw.get("data") or {}
        if not isinstance(data, dict):
            raise ModelError(f"{where} has a data section that is not a JSON object.")
        try:
            crop = CropGeometry.from_dict(raw["crop"]) if raw.get("crop") else None
        except ValueError as exc:
            raise ModelError(f"{where} has a crop section facexpr does not know: {exc}") from exc
        return cls(name=str(raw.get("name") or default_name), trained_at=trained_at, classes=classes,
                   crop=crop, data=data, epochs=epochs, wall_time_s=wall,
                   val=Scores.from_dict(raw.get("val") or {}, where),
                   sections={k: v for k, v in raw.items() if k not in _TYPED}, _order=tuple(raw))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: keys in the order they were read (new ones after), absent ones left out."""
        typed = {"name": self.name, "trained_at": self.trained_at.isoformat() if self.trained_at else None,
                 "classes": list(self.classes), "crop": self.crop.to_dict() if self.crop else None,
                 "data": self.data, "epochs": self.epochs,
                 "wall_time_s": self.wall_time_s, "val": self.val.to_dict()}
        if "classes" not in self._order:  # read from a card that left them implicit: keep it so
            del typed["classes"]
        values = {**{k: v for k, v in typed.items() if v not in (None, {}, "")}, **self.sections}
        order = [k for k in self._order if k in values] + [k for k in values if k not in self._order]
        return {k: values[k] for k in order}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, default_name: str = "") -> ModelCard:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ModelError(f"The model card of {default_name or 'this model'} is not valid JSON: "
                             f"{exc}") from exc
        return cls.from_dict(raw, default_name)


def card_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".json")


def read_card(model_path: Path) -> ModelCard:
    """The model card beside MODEL_PATH, named after the file by default (a blank card when the
    file has none). ModelError when the card cannot be read or is broken."""
    path = card_path(model_path)
    if not path.exists():
        return ModelCard(name=Path(model_path).stem)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ModelError(f"The model card {path} cannot be read: {exc.strerror or exc}.") from exc
    return ModelCard.from_json(text, Path(model_path).stem)


def write_card(model_path: Path, card: ModelCard) -> None:
    """Write CARD beside MODEL_PATH, all or nothing: a card is never left half-written."""
    path = card_path(model_path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(card.to_json())
    tmp.replace(path)


def _servable(models_dir: Path) -> list[tuple[ModelCard, Path]]:
    """Every model in MODELS_DIR with a readable card, newest first; a broken card is left out."""
    found = []
    for keras_file in models_dir.glob("*.keras"):
        if not card_path(keras_file).exists():
            continue
        try:
            found.append((read_card(keras_file), keras_file))
        except ModelError:
            continue
    never = datetime.min.replace(tzinfo=UTC)
    return sorted(found, key=lambda c: (c[0].trained_at or never, c[1].name), reverse=True)


def newest_model(models_dir: Path = MODELS_DIR) -> Path:
    """The model whose card is newest (by its `trained_at`), i.e. the shipped default."""
    servable = _servable(models_dir)
    if not servable:
        raise ModelError(f"No model found in {models_dir}: train one with `python -m facexpr train`.")
    return servable[0][1]


def list_models(models_dir: Path = MODELS_DIR) -> list[Path]:
    """Every servable model (a .keras file with a readable card), newest first."""
    return [path for _, path in _servable(models_dir)]


@dataclass
class Classifier:
    """A loaded model and its card; `predict` maps crops to class probabilities.

    With LITE (what `load_classifier` gives a model with its checked `.tflite`) it runs on LiteRT,
    int8 weights, no TensorFlow (`backend` "lite"). Else NETWORK, a Keras model: `fast` serves a
    copy with batch norm folded into the convolutions ("folded"; TFLite for single crops), checked
    to agree with Keras within 1e-3 (facexpr.model.inference); fast=False runs Keras ("keras").

    precision="bfloat16" (Keras path only) runs batches of crops in bfloat16, about 5× faster
    on CPUs with AMX; probabilities move by up to ~2e-2 and a near-tie can change its answer.
    Only offered where the CPU has native bfloat16 (elsewhere it would be slower).
    """

    network: Any = None
    card: ModelCard = field(default_factory=ModelCard)
    path: Path | None = None
    flip_average: bool = True
    fast: bool = True
    precision: str = "float32"
    lite: LiteRuntime | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ModelError(f"Unknown precision {self.precision!r}; choose {' or '.join(PRECISIONS)}.")
        self._single: Any = None  # the TFLite copy for one crop, made on the first single-crop call
        self._single_lock = threading.Lock()
        if self.lite is not None:
            if self.precision != "float32":
                raise ModelError("bfloat16 runs only on the Keras path; the LiteRT model is int8.")
            self.backend = "lite"
            return
        if self.network is None:
            raise ModelError("A Classifier needs a Keras network or a LiteRT model.")
        import tensorflow as tf

        from facexpr.model.inference import compile_plan, has_native_bf16, keras_forward

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

    def keras_network(self) -> Any:
        """The Keras network (Grad-CAM needs its gradients): loaded from `path` on first use when
        the classifier runs on LiteRT. ModelError, naming the extra, without TensorFlow."""
        if self.network is None:
            if self.path is None:
                raise ModelError("This classifier has no Keras network and no file to load one from.")
            self.network = load_network(self.path)
        return self.network

    def _single_crop_forward(self) -> Any:
        """The TFLite copy, converted once (~0.2 s) where folding worked; else None."""
        from facexpr.model.inference import to_lite

        if self._single is None and self.backend == "folded":
            with self._single_lock:
                if self._single is None:
                    self._single = to_lite(self._forward, (CROP_SIZE, CROP_SIZE, 1)) or False
        return self._single or None

    @property
    def version(self) -> str:
        return self.card.name or (self.path.stem if self.path else "unsaved")

    @property
    def unsure_below(self) -> float | None:
        """The confidence under which an answer is shown as unsure (the card's `unsure.below`)."""
        section = self.card.sections.get("unsure")
        try:
            return float(section["below"]) if isinstance(section, dict) else None
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def geometry(self) -> CropGeometry:
        """How a photo's faces are cut for this model: its card's, else the legacy Haar box."""
        return self.card.crop or CropGeometry.from_dict(None)

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
        if self.lite is not None:
            return self.lite(x)
        single = self._single_crop_forward() if len(x) == 1 else None
        if single is not None:
            probs = single(x)
            if probs is not None:  # None: another thread holds the interpreter
                return probs.astype(np.float32)
        out = [self._batch_forward(x[i:i + batch_size]).numpy() for i in range(0, len(x), batch_size)]
        return np.concatenate(out).astype(np.float32)


def load_network(model_path: Path, missing: str = "") -> Any:
    """The Keras network in MODEL_PATH. Without TensorFlow, a ModelError: MISSING, else one that
    names the extra to install."""
    try:
        import keras
    except ImportError as exc:
        raise ModelError(missing or f"Loading {model_path.name} needs TensorFlow, which is not installed: "
                         f"{install_hint('train')}.") from exc
    try:
        return keras.models.load_model(model_path, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file; all mean the same here
        raise ModelError(f"Could not load model {model_path}: {exc}") from exc


def load_classifier(path: str | os.PathLike | None = None, precision: str = "float32",
                    backend: str = "auto") -> Classifier:
    """Load a model and its JSON card; default is the newest card in models/ (the checkout's,
    else the one installed with the package). PATH may be `s3://bucket/key.keras` (fetched once
    into FACEXPR_DATA_DIR/models with its .tflite, facexpr.model.source).

    BACKEND "auto" serves the model's `.tflite` on LiteRT when it is there and its sha256 matches
    the card (no TensorFlow imported), else the `.keras` through TensorFlow; "keras" always loads
    the Keras network (retraining needs it); bfloat16 precision implies "keras"."""
    if path is not None and str(path).startswith("s3://"):
        from facexpr.model.source import local_model_path

        path = local_model_path(path)
    model_path = Path(path) if path else newest_model()
    if not model_path.exists():
        raise ModelError(f"Model file {model_path} does not exist (check FACEXPR_MODEL).")
    card = read_card(model_path)
    if backend == "auto" and precision == "float32":
        lite_file = matching_lite_file(model_path, card.sections.get("lite"))
        if lite_file is not None:
            classifier = Classifier(card=card, path=model_path, lite=LiteRuntime.from_file(lite_file))
            classifier.predict(np.zeros((1, CROP_SIZE, CROP_SIZE), np.uint8))  # warm up now
            return classifier
        stale = lite_path(model_path).is_file()
        if stale:
            log.warning("%s does not match its card's sha256: serving %s through TensorFlow",
                        lite_path(model_path).name, model_path.name)
        why = (f"{lite_path(model_path).name} does not match the card of {model_path.name}" if stale
               else f"{model_path.name} has no LiteRT file ({lite_path(model_path).name})")
        network = load_network(model_path, f"{why}, and TensorFlow is not installed to serve the .keras: "
                                           f"{install_hint('train')}, then `facexpr export {model_path}`.")
    else:
        network = load_network(model_path)
    classifier = Classifier(network=network, card=card, path=model_path, precision=precision)
    classifier.predict(np.zeros((1, CROP_SIZE, CROP_SIZE), np.uint8))  # trace now, not on the first request
    return classifier


def add_to_card(model_path: Path, section: str, figures: dict[str, Any]) -> None:
    """Record an evaluation under SECTION of the model's card (training's own entries stay as written)."""
    if section in RESERVED_CARD_KEYS:
        raise ModelError(f"{section!r} is written by training; choose another card section name.")
    card = read_card(model_path)
    card.sections[section] = figures
    write_card(model_path, card)


def save_model(network: Any, card: ModelCard, out: Path, probe: np.ndarray | None = None,
               val: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """Write OUT.keras, its LiteRT file OUT.tflite (checked against it on PROBE crops, and on VAL's
    labelled crops when given: facexpr.model.export) and OUT.json; returns the .keras path. An
    export that fails its check leaves no .tflite: the model is then served through TensorFlow."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    keras_path = out.with_suffix(".keras")
    network.save(keras_path)
    _export_into(card, network, keras_path, probe, val)
    write_card(keras_path, card)
    return keras_path


def _export_into(card: ModelCard, network: Any, keras_path: Path, probe: np.ndarray | None,
                 val: tuple[np.ndarray, np.ndarray] | None) -> None:
    """Export KERAS_PATH's .tflite into CARD's `lite` section; on a failed check, its `error`."""
    from facexpr.model.export import export_lite

    try:
        card.sections["lite"] = export_lite(network, keras_path, probe, val)
    except Exception as exc:  # the converter's many kinds too: the .keras is saved and serves anyway
        lite_path(keras_path).unlink(missing_ok=True)  # never leave a file from an older export
        log.warning("%s The model is served through TensorFlow.", exc)
        card.sections["lite"] = {"error": str(exc)}
