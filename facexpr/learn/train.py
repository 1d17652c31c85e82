"""Train the network on the image layout (+ relabeled images), evaluate, write model + card.

Recipe (sized for a 2-core CPU): VGG-style net with batch norm; augmentation by flip, small
rotation, shift, zoom, contrast and random erasing; label smoothing; SGD with Nesterov
momentum, weight decay and a warm-up + cosine learning-rate schedule; bfloat16 compute where
the CPU has native support. Checkpoints every epoch so `--resume` continues a stopped run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from facexpr.core.errors import DataError
from facexpr.core.extras import require
from facexpr.core.labels import CROP_SIZE, EXPRESSIONS
from facexpr.learn.align_data import training_copies
from facexpr.learn.augment import Augmentation, augment_batch, batch_rng, epoch_order
from facexpr.learn.data import Dataset, load_layout, load_packed
from facexpr.learn.evaluate import report
from facexpr.learn.targets import fer2013_targets, with_teacher
from facexpr.model.classifier import Classifier, ModelCard, Scores, build_network, read_card, save_model
from facexpr.model.inference import has_native_bf16
from facexpr.photo.geometry import FER_TEMPLATE


@dataclass
class Recipe:
    epochs: int = 40
    batch_size: int = 128
    learning_rate: float = 0.05
    warmup_epochs: int = 2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    dropout: float = 0.4
    widths: tuple[int, ...] = (32, 64, 128, 256)
    rotation_deg: float = 10.0
    shift: float = 0.1
    zoom: float = 0.1
    erase_prob: float = 0.5
    val_fraction: float = 0.1  # only used when the data has no val/ split
    seed: int = 1234
    ferplus_weight: float = 0.0  # share of the FER+ vote distribution in each target (needs ferplus=…)
    ferplus: str | None = None  # ferplus_labels.csv: a local path or s3://bucket/key
    init_from: str | None = None  # a .keras model of the same widths to start from (a warm restart)
    teacher: str | None = None  # a model whose answers soften the FER2013 targets (targets.py)
    teacher_weight: float = 0.0  # the teacher's share of each FER2013 face's target
    precision: str = field(default_factory=lambda: "mixed_bfloat16" if has_native_bf16() else "float32")
    augment: str = "standard"  # or "photo": photo-like framing, resolution, blur, JPEG, lighting (augment.py)
    logit_adjust: float = 0.0  # τ of logit-adjusted cross-entropy (0: plain); see logit_adjusted_loss
    aligned_share: float = 0.0  # of training faces, per batch, read as aligned like a photo (align_data.py)

    def augmentation(self) -> Augmentation:
        return Augmentation(self.augment, self.rotation_deg, self.shift, self.zoom, self.erase_prob)


def _join(uri: str, part: str) -> str:
    return uri.rstrip("/") + "/" + part


def load_training_data(data_uri: str, relabeled_uri: str | None, recipe: Recipe
                       ) -> tuple[Dataset, Dataset, Dataset]:
    """(train, val, relabeled). DATA holds train/ and val/, or is one layout split by seed,
    or is a packed `.npz` (`pack_dataset`)."""
    relabeled = load_layout(relabeled_uri, required=False) if relabeled_uri else Dataset.concat([], "")
    if str(data_uri).endswith(".npz"):
        train, val = load_packed(data_uri)
        return train, val, relabeled
    train = load_layout(_join(data_uri, "train"), required=False)
    if len(train):
        val = load_layout(_join(data_uri, "val"), required=False)
    else:
        everything = load_layout(data_uri)
        rng = np.random.default_rng(recipe.seed)
        order = rng.permutation(len(everything))
        n_val = max(1, int(len(order) * recipe.val_fraction))
        train, val = everything.subset(order[n_val:]), everything.subset(order[:n_val])
    if not len(val):
        raise DataError(f"{data_uri} has train/ but no val/ images to evaluate on.")
    return train, val, relabeled


def _augmenter(recipe: Recipe):
    """A batch → batch augmentation function for tf.data (training only)."""
    import keras
    import tensorflow as tf

    # float32 whatever the global policy: augmentation feeds pixels, not activations.
    f32 = {"seed": recipe.seed, "dtype": "float32"}
    geometric = keras.Sequential([
        keras.layers.RandomFlip("horizontal", **f32),
        keras.layers.RandomRotation(recipe.rotation_deg / 360.0, fill_mode="reflect", **f32),
        keras.layers.RandomTranslation(recipe.shift, recipe.shift, fill_mode="reflect", **f32),
        keras.layers.RandomZoom(recipe.zoom, fill_mode="reflect", **f32),
        keras.layers.RandomContrast(0.2, value_range=(0, 255), **f32),
    ])
    size = CROP_SIZE

    def random_erase(x):
        # One rectangle per image (2–25 % of the area) filled with noise, with probability erase_prob.
        n = tf.shape(x)[0]
        area = tf.random.uniform([n], 0.02, 0.25) * size * size
        aspect = tf.exp(tf.random.uniform([n], math.log(0.3), math.log(3.3)))
        h = tf.clip_by_value(tf.sqrt(area * aspect), 1.0, size)
        w = tf.clip_by_value(tf.sqrt(area / aspect), 1.0, size)
        y0 = tf.random.uniform([n]) * (size - h)
        x0 = tf.random.uniform([n]) * (size - w)
        grid = tf.range(size, dtype=tf.float32)
        rows = (grid[None, :] >= y0[:, None]) & (grid[None, :] < (y0 + h)[:, None])
        cols = (grid[None, :] >= x0[:, None]) & (grid[None, :] < (x0 + w)[:, None])
        box = rows[:, :, None] & cols[:, None, :]
        apply = tf.random.uniform([n]) < recipe.erase_prob
        mask = (box & apply[:, None, None])[..., None]
        noise = tf.random.uniform(tf.shape(x), 0.0, 255.0)
        return tf.where(mask, noise, x)

    def augment(x, y):
        x = geometric(x, training=True)
        x = tf.clip_by_value(x, 0.0, 255.0)
        return random_erase(x), y

    return augment


def _backend() -> str:
    import keras

    return keras.backend.backend()


def _numpy_batches(train: Dataset, targets: np.ndarray, recipe: Recipe, workers: int = 1,
                   aligned: np.ndarray | None = None):
    """A keras PyDataset of augmented batches (numpy + OpenCV; runs on any Keras backend). With
    ALIGNED (each training face's aligned copy), the recipe's aligned_share of each batch reads those."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=16)
            self.epoch = 0
            self.aug = recipe.augmentation()
            self._order: tuple[int, np.ndarray] | None = None

        def __len__(self) -> int:
            return len(train) // recipe.batch_size

        def order(self) -> np.ndarray:
            if self._order is None or self._order[0] != self.epoch:
                self._order = (self.epoch, epoch_order(len(train), recipe.seed, self.epoch))
            return self._order[1]

        def __getitem__(self, index: int):
            rows = self.order()[index * recipe.batch_size:(index + 1) * recipe.batch_size]
            rng = batch_rng(recipe.seed, self.epoch, index)
            images = train.images[rows]
            if aligned is not None:
                swap = rng.random(len(rows)) < recipe.aligned_share
                images = np.where(swap[:, None, None], aligned[rows], images)
            return augment_batch(images, rng, self.aug), targets[rows]

        def on_epoch_end(self) -> None:
            self.epoch += 1

    return Batches()


def _make_datasets(train: Dataset, targets: np.ndarray, val: Dataset, recipe: Recipe,
                   initial_epoch: int = 0, workers: int = 1, aligned: np.ndarray | None = None):
    """(train batches, val data). The recipe's standard augmentation on TensorFlow runs in tf.data
    as it always has; photo augmentation, aligned copies, or any other backend use the numpy pipeline."""
    if recipe.augment != "standard" or aligned is not None or _backend() != "tensorflow":
        batches = _numpy_batches(train, targets, recipe, workers, aligned)
        batches.epoch = initial_epoch
        return batches, (val.images[..., None].astype(np.float32), val.one_hot())
    import tensorflow as tf

    x, y = train.images[..., None].astype(np.float32), targets
    train_ds = (tf.data.Dataset.from_tensor_slices((x, y))
                .shuffle(len(x), seed=recipe.seed, reshuffle_each_iteration=True)
                .batch(recipe.batch_size, drop_remainder=True)
                .map(_augmenter(recipe), num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(tf.data.AUTOTUNE))
    val_ds = (tf.data.Dataset.from_tensor_slices(
        (val.images[..., None].astype(np.float32), val.one_hot()))
        .batch(512).prefetch(tf.data.AUTOTUNE))
    return train_ds, val_ds


def logit_adjusted_loss() -> type:
    """Cross-entropy on the softmax re-weighted by the class priors to the power τ — logit adjustment
    (Menon et al., 2021) for a network whose output is already a softmax: softmax(z + τ·log π) =
    p·π^τ / Σ p·π^τ. Training then has to give the rare classes a margin, so the plain softmax at
    inference stops answering the frequent classes because they are the safe answer. Registered with
    Keras so a checkpoint compiled with it loads again (`--resume`)."""
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="facexpr")
    class LogitAdjustedCrossentropy(keras.losses.Loss):
        def __init__(self, priors: list[float], tau: float = 1.0, label_smoothing: float = 0.0,
                     name: str = "logit_adjusted_crossentropy", **kwargs: Any) -> None:
            super().__init__(name=name, **kwargs)
            self.priors = [float(p) for p in priors]
            self.tau, self.label_smoothing = float(tau), label_smoothing

        def call(self, y_true, y_pred):
            weights = ops.power(ops.convert_to_tensor(self.priors, dtype=y_pred.dtype), self.tau)
            adjusted = y_pred * weights
            adjusted = adjusted / ops.sum(adjusted, axis=-1, keepdims=True)
            return keras.losses.categorical_crossentropy(y_true, adjusted,
                                                         label_smoothing=self.label_smoothing)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "priors": self.priors, "tau": self.tau,
                    "label_smoothing": self.label_smoothing}

    return LogitAdjustedCrossentropy


def _compile(network, recipe: Recipe, steps_per_epoch: int, priors: np.ndarray | None = None) -> None:
    import keras

    total = steps_per_epoch * recipe.epochs
    warmup = min(steps_per_epoch * recipe.warmup_epochs, total // 2)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=recipe.learning_rate * 0.1, decay_steps=max(1, total - warmup),
        warmup_target=recipe.learning_rate, warmup_steps=warmup, alpha=0.0)
    optimizer = keras.optimizers.SGD(schedule, momentum=recipe.momentum, nesterov=True,
                                     weight_decay=recipe.weight_decay)
    loss = (logit_adjusted_loss()(priors.tolist(), recipe.logit_adjust, recipe.label_smoothing)
            if recipe.logit_adjust and priors is not None
            else keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing))
    network.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


def _machine() -> dict[str, Any]:
    import keras

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    found = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
             "keras": keras.__version__, "backend": _backend(), "platform": platform.platform()}
    if _backend() == "tensorflow":
        import tensorflow as tf

        found["tensorflow"] = tf.__version__
    elif _backend() == "jax":
        import jax

        found["jax"] = jax.__version__
        found["devices"] = [str(d) for d in jax.devices()]
    return found


def _flip_averaged(network, images: np.ndarray) -> np.ndarray:
    """Probabilities averaged over each crop and its mirror image, by Keras on any backend."""
    x = images[..., None].astype(np.float32)
    return (network.predict(x, batch_size=512, verbose=0)
            + network.predict(x[:, :, ::-1], batch_size=512, verbose=0)) / 2


def train(data_uri: str, out: str | os.PathLike, relabeled_uri: str | None = None,
          recipe: Recipe | None = None, resume: bool = False, checkpoint_dir: Path | None = None,
          verbose: int | None = None, loader_workers: int = 1) -> ModelCard:
    """Train, evaluate on val with flip averaging, write OUT.keras + OUT.json (+ OUT.png).

    DATA is an image layout or a `.npz` made by `pack_dataset` (one file, for a machine without
    the layout). LOADER_WORKERS threads make the numpy pipeline's batches (results do not depend
    on it: each batch is a function of seed, epoch and index). Returns the model card it wrote."""
    # A lean install: say which extra, not a traceback. Keras alone will do (it trains on JAX too).
    require("train", "Training", modules=("keras",))
    import keras

    recipe = recipe or Recipe()
    out = Path(out)
    verbose = verbose if verbose is not None else (1 if sys.stdout.isatty() else 2)
    keras.utils.set_random_seed(recipe.seed)
    keras.mixed_precision.set_global_policy(recipe.precision)

    train_set, val_set, relabeled = load_training_data(data_uri, relabeled_uri, recipe)
    train_set, soft, ferplus_report = fer2013_targets(train_set, recipe.ferplus, recipe.ferplus_weight)
    teacher_report = None
    if recipe.teacher:
        soft, teacher_report = with_teacher(train_set.images, soft, recipe.teacher, recipe.teacher_weight)
    full_train = Dataset.concat([train_set, relabeled], data_uri)
    targets = np.concatenate([soft, relabeled.one_hot()])  # relabeled: the label a person gave
    if len(full_train) < recipe.batch_size:
        recipe.batch_size = max(1, len(full_train))
    steps = len(full_train) // recipe.batch_size

    checkpoint_dir = Path(checkpoint_dir or out.parent / ".checkpoints" / out.name)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    ckpt_model, ckpt_state = checkpoint_dir / "last.keras", checkpoint_dir / "state.json"
    history: dict[str, list[float]] = {}
    initial_epoch, elapsed_before = 0, 0.0
    priors = targets.mean(axis=0)  # the class mix the network sees (logit adjustment's π)
    if resume and ckpt_model.exists() and ckpt_state.exists():
        state = json.loads(ckpt_state.read_text())
        if state.get("recipe") != _jsonable(asdict(recipe)):
            raise DataError(f"The checkpoint in {checkpoint_dir} used another recipe; "
                            "resume with the same options or train without --resume.")
        logit_adjusted_loss()  # registered, so a checkpoint compiled with it loads
        network = keras.models.load_model(ckpt_model)
        initial_epoch, history, elapsed_before = state["epoch"], state["history"], state["wall_time_s"]
        print(f"Resuming from epoch {initial_epoch} of {recipe.epochs}", flush=True)
    else:
        network = build_network(recipe.widths, recipe.dropout, recipe.seed)
        if recipe.init_from:
            _start_from(network, recipe.init_from)
        _compile(network, recipe, steps, priors)
    aligned, aligned_report = None, None
    if recipe.aligned_share > 0:
        aligned, aligned_report = training_copies(train_set, relabeled, recipe.aligned_share, checkpoint_dir)
    train_ds, val_data = _make_datasets(full_train, targets, val_set, recipe, initial_epoch, loader_workers,
                                        aligned)

    started = time.perf_counter()

    class Checkpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for k, v in (logs or {}).items():
                history.setdefault(k, []).append(float(v))
            network.save(ckpt_model)
            ckpt_state.write_text(json.dumps({
                "epoch": epoch + 1, "history": history, "recipe": _jsonable(asdict(recipe)),
                "wall_time_s": elapsed_before + time.perf_counter() - started}))

    if initial_epoch < recipe.epochs:
        # shuffle=False: both pipelines shuffle themselves (Keras would reorder the numpy batches by
        # Python's global random state, which a resumed run does not share).
        network.fit(train_ds, epochs=recipe.epochs, initial_epoch=initial_epoch, validation_data=val_data,
                    validation_batch_size=512, shuffle=False, callbacks=[Checkpoint()], verbose=verbose)
    wall = elapsed_before + time.perf_counter() - started

    # Serve in float32: the saved model then runs the same on any CPU.
    keras.mixed_precision.set_global_policy("float32")
    served = build_network(recipe.widths, recipe.dropout, recipe.seed)
    served.set_weights(network.get_weights())
    val_probs = (Classifier(served).predict(val_set.images) if _backend() == "tensorflow"
                 else _flip_averaged(served, val_set.images))
    val_report = report(val_set.labels, val_probs.argmax(1))

    card = ModelCard(
        name=out.name,
        trained_at=datetime.now(UTC).replace(microsecond=0),
        data={
            "train": {"source": data_uri, "counts": train_set.counts(), "skipped": train_set.skipped,
                      **({"aligned": aligned_report} if aligned_report else {})},
            "val": {"source": data_uri, "counts": val_set.counts(), "skipped": val_set.skipped},
            "relabeled": {"source": relabeled_uri, "counts": relabeled.counts(),
                          "skipped": relabeled.skipped},
            **({"ferplus": ferplus_report} if ferplus_report else {}),
            **({"teacher": teacher_report} if teacher_report else {}),
        },
        epochs=recipe.epochs,
        wall_time_s=round(wall, 1),
        val=Scores.from_dict({**val_report, "test_time_augmentation": "horizontal flip average"}),
        sections={
            "input": {"size": [CROP_SIZE, CROP_SIZE], "channels": 1, "pixels": "uint8 0..255, gray"},
            # FER2013's faces sit where the template puts photos' eyes and mouth (facexpr.photo.align)
            "crop": FER_TEMPLATE.to_dict(),
            **({"init_from": _init_summary(recipe.init_from)} if recipe.init_from else {}),
            "recipe": _jsonable(asdict(recipe)),
            **({"logit_adjustment": {"tau": recipe.logit_adjust, "priors": dict(zip(
                EXPRESSIONS, np.round(priors, 4).tolist(), strict=True))}} if recipe.logit_adjust else {}),
            "augmentation": _jsonable(asdict(recipe.augmentation())),
            "parameters": int(served.count_params()),
            "seed": recipe.seed,
            "machine": _machine(),
            "history": history,
        },
    )
    checks = {"probe": val_set.images[:512], "val": (val_set.images, val_set.labels)} if len(val_set) else {}
    keras_path = save_model(served, card, out, **checks)  # with its .tflite, checked on val
    _plot_learning_curve(history, keras_path.with_suffix(".png"))
    return card


def _start_from(network, model_path: str) -> None:
    """Copy the weights of MODEL_PATH into NETWORK (same widths), for a warm restart."""
    import keras

    try:
        source = keras.models.load_model(model_path, compile=False)
    except Exception as exc:
        raise DataError(f"Cannot load {model_path} to start from: {exc}") from exc
    theirs, ours = source.get_weights(), network.get_weights()
    if [w.shape for w in theirs] != [w.shape for w in ours]:
        raise DataError(f"{model_path} has another shape than this recipe's net; "
                        "pass the --widths it was trained with.")
    network.set_weights(theirs)


def _init_summary(model_path: str) -> dict[str, Any]:
    """What a warm restart started from: the model's name, val accuracy, epochs and wall time."""
    card = read_card(Path(model_path))
    return {"model": card.name, "val_accuracy": card.val.accuracy, "epochs": card.epochs,
            "wall_time_s": card.wall_time_s}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _plot_learning_curve(history: dict[str, list[float]], path: Path) -> None:
    """Accuracy per epoch (train and val) as a small PNG beside the model."""
    from PIL import Image, ImageDraw

    train_acc, val_acc = history.get("accuracy", []), history.get("val_accuracy", [])
    if not train_acc:
        return
    w, h, pad = 640, 360, 40
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([pad, pad, w - pad, h - pad], outline="black")
    n = max(len(train_acc), 2)

    def point(i: int, acc: float) -> tuple[float, float]:
        return pad + i * (w - 2 * pad) / (n - 1), h - pad - acc * (h - 2 * pad)

    for tick in range(0, 11, 2):
        y = h - pad - tick / 10 * (h - 2 * pad)
        draw.line([pad - 4, y, pad, y], fill="black")
        draw.text((4, y - 6), f"{tick / 10:.1f}", fill="black")
    for series, colour, label in ((train_acc, "#1f77b4", "train acc"), (val_acc, "#d62728", "val acc")):
        if len(series) > 1:
            draw.line([point(i, a) for i, a in enumerate(series)], fill=colour, width=2)
        draw.text((w - pad - 90, pad + 6 + 14 * (colour == "#d62728")), label, fill=colour)
    draw.text((pad, h - pad + 8), f"epochs 1..{len(train_acc)}", fill="black")
    img.save(path)
