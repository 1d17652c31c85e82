"""Fine-tune the served model on people's corrections, so a correction makes the next model better.

A full retrain sees each correction a few times among 28,709 FER2013 faces and forgets it. Here the
whole served network is fine-tuned for a few epochs on batches in which the corrections are a fixed
share S (default 0.25), the rest a seeded replay sample of the training data (default 2,800 images),
which keeps FER2013 from being forgotten. One epoch is one pass over the replay sample, so the
cost does not grow with the number of corrections (≈ 15,100 images for the default recipe).

Evidence comes from every correction by cross-fitting: the corrections are split into K folds of
whole people (or photos, for a single labeller; facexpr.learn.correction_set), the served model is
fine-tuned K times, each time without one fold, and every correction is scored by the fine-tune
that never saw it. That pooled before/after — beside FER2013 val and an optional folder of
labelled photos — goes to the guardrail (facexpr.learn.guardrail), which decides whether the
candidate, a last fine-tune on all the corrections, may be served. The cost is K + 1 fine-tunes.
Only corrections cut the way the base model cuts faces (its card's crop geometry) are learned
from; the others are counted in the card as left out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from facexpr.core.config import Settings
from facexpr.core.errors import DataError, ModelError
from facexpr.core.extras import require
from facexpr.core.labels import EXPRESSIONS
from facexpr.learn.correction_set import Corrections, Folds, assign_folds, load_corrections
from facexpr.learn.data import Dataset, layout_keys, load_layout, read_keys
from facexpr.learn.evaluate import answers, labelled_crops, report
from facexpr.learn.guardrail import Verdict, judge, paired, score
from facexpr.model.classifier import (
    CROP_SIZE,
    Classifier,
    ModelCard,
    build_network,
    load_classifier,
    save_model,
)
from facexpr.model.inference import has_native_bf16
from facexpr.photo.geometry import CropGeometry
from facexpr.storage.store import open_store

Progress = Callable[[float, str], None]  # (fraction done 0..1, what is happening)


@dataclass
class RetrainRecipe:
    epochs: int = 4
    share: float = 0.25  # of every batch that is corrections (0.5 cost 1.3–1.7 val points: README)
    replay: int = 2800  # FER2013 training images replayed (seeded sample)
    batch_size: int = 64
    learning_rate: float = 0.005  # peak; cosine decay to 0, no warm-up (the net is trained already)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    folds: int = 3  # cross-fitting: K fine-tunes, each without one fold, then one on all (K + 1 in all)
    seed: int = 1234
    augment: bool = True  # the training recipe's flips, rotations, shifts, zoom, contrast, erasing
    precision: str = field(default_factory=lambda: "mixed_bfloat16" if has_native_bf16() else "float32")

    def check(self) -> None:
        if not 0.0 < self.share < 1.0:
            raise DataError(f"The corrections' share of a batch must be between 0 and 1, not {self.share}.")
        if self.epochs < 1 or self.replay < 0 or self.batch_size < 2:
            raise DataError("epochs must be ≥ 1, replay ≥ 0 and batch size ≥ 2.")
        if self.folds < 2:
            raise DataError(f"Cross-fitting needs at least 2 folds, not {self.folds}.")


def recipe_from(overrides: str | dict[str, Any] | None) -> RetrainRecipe:
    """The default recipe with OVERRIDES (a dict, or its JSON as in FACEXPR_RETRAIN_RECIPE) applied."""
    import json

    recipe = RetrainRecipe()
    if not overrides:
        return recipe
    try:
        values = json.loads(overrides) if isinstance(overrides, str) else dict(overrides)
    except ValueError as exc:
        raise DataError(f"FACEXPR_RETRAIN_RECIPE is not JSON: {exc}") from exc
    unknown = set(values) - set(asdict(recipe))
    if unknown:
        raise DataError(f"Unknown retrain recipe field(s) {', '.join(sorted(unknown))}; "
                        f"known: {', '.join(asdict(recipe))}.")
    for key, value in values.items():
        setattr(recipe, key, type(getattr(recipe, key))(value))
    recipe.check()
    return recipe


# ---------------------------------------------------------------- data

def replay_sample(data_uri: str, n: int, seed: int, workers: int = 8) -> Dataset:
    """N training images drawn without replacement (seeded) from DATA/train, read only those."""
    root = data_uri.rstrip("/") + "/train"
    store = open_store(root)
    keys = sorted(layout_keys(store.list_keys()))
    if not keys:
        raise DataError(f"No training images under {root}/<expression>/<name>.png to replay.")
    chosen = [keys[i] for i in np.sort(np.random.default_rng(seed).permutation(len(keys))[:n])]
    return read_keys(store, chosen, root, workers)


def batch_schedule(n_corrections: int, n_replay: int, recipe: RetrainRecipe
                   ) -> tuple[np.ndarray, int]:
    """(indices of shape (epochs × steps, batch) into [corrections; replay], steps per epoch).

    Each batch holds round(share × batch) corrections, cycled in a fresh seeded order so each is
    seen equally often, and the rest replay images, each seen once per epoch."""
    rng = np.random.default_rng(recipe.seed)
    k = max(1, round(recipe.share * recipe.batch_size)) if n_corrections else 0
    if not n_replay:
        k = recipe.batch_size
    r = recipe.batch_size - k
    steps = max(1, math.ceil(n_replay / r)) if r else max(1, math.ceil(n_corrections / k))
    rows = []
    pool: list[int] = []
    for _ in range(recipe.epochs):
        replay_order = rng.permutation(n_replay) if n_replay else np.zeros(0, np.int64)
        for step in range(steps):
            while len(pool) < k:
                pool.extend(rng.permutation(n_corrections).tolist())
            chosen, pool = pool[:k], pool[k:]
            part = replay_order[step * r:(step + 1) * r] if r else np.zeros(0, np.int64)
            if len(part) < r:  # the last batch of an epoch: top it up from the start of the order
                part = np.concatenate([part, rng.choice(n_replay, r - len(part))])
            rows.append(np.concatenate([np.asarray(chosen, np.int64), n_corrections + part]))
    return np.stack(rows), steps


# ---------------------------------------------------------------- the fine-tune

def fine_tune(network: Any, corrections: Dataset, replay: Dataset, recipe: RetrainRecipe,
              progress: Progress | None = None) -> tuple[Any, dict[str, list[float]]]:
    """Train NETWORK (a Keras model, changed in place) on the mixed batches; returns a float32 copy."""
    import keras
    import tensorflow as tf

    from facexpr.learn.train import Recipe, _augmenter

    images = np.concatenate([corrections.images, replay.images])
    targets = np.concatenate([corrections.one_hot(), replay.one_hot()])
    index, steps = batch_schedule(len(corrections), len(replay), recipe)
    total = len(index)
    widths = _widths(network)

    keras.utils.set_random_seed(recipe.seed)
    keras.mixed_precision.set_global_policy(recipe.precision)
    try:
        trainable = build_network(widths, seed=recipe.seed)
        trainable.set_weights(network.get_weights())
        x_all = tf.constant(images[..., None])
        y_all = tf.constant(targets)
        ds = tf.data.Dataset.from_tensor_slices(index).map(
            lambda i: (tf.cast(tf.gather(x_all, i), tf.float32), tf.gather(y_all, i)))
        if recipe.augment:
            ds = ds.map(_augmenter(Recipe(seed=recipe.seed)), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.prefetch(tf.data.AUTOTUNE)
        schedule = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, decay_steps=total, alpha=0.0)
        trainable.compile(optimizer=keras.optimizers.SGD(schedule, momentum=recipe.momentum, nesterov=True,
                                                         weight_decay=recipe.weight_decay),
                          loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
                          metrics=["accuracy"])
        history: dict[str, list[float]] = {}

        class Report(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if progress and (batch % 5 == 0):
                    done = self._epoch * steps + batch + 1
                    progress(done / total,
                             f"epoch {self._epoch + 1}/{recipe.epochs}, batch {batch + 1}/{steps}")

            def on_epoch_begin(self, epoch, logs=None):
                self._epoch = epoch

            def on_epoch_end(self, epoch, logs=None):
                for k, v in (logs or {}).items():
                    history.setdefault(k, []).append(round(float(v), 4))

        trainable.fit(ds, epochs=recipe.epochs, steps_per_epoch=steps, callbacks=[Report()], verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    served = build_network(widths, seed=recipe.seed)  # float32, so it serves the same on any CPU
    served.set_weights(trainable.get_weights())
    return served, history


def _widths(network: Any) -> tuple[int, ...]:
    """The channels per stage of a facexpr VGG network (read from its first conv per stage)."""
    widths = []
    stage = 0
    while True:
        try:
            widths.append(int(network.get_layer(f"s{stage}_conv0").filters))
        except ValueError:
            break
        stage += 1
    if not widths:
        raise ModelError("The served model is not a facexpr VGG network; it cannot be fine-tuned here.")
    return tuple(widths)


# ---------------------------------------------------------------- the whole run

@dataclass
class RetrainResult:
    card: ModelCard
    keras_path: Path

    @property
    def record(self) -> dict[str, Any]:
        """The card as written (its JSON object): before/after, guardrail and the rest."""
        return self.card.to_dict()

    @property
    def passed(self) -> bool:
        return bool(self.card.sections["guardrail"]["passed"])


def build_card(*, name: str, base: Classifier, recipe: RetrainRecipe, data_uri: str, corrections_uri: str,
               corrections: Corrections, folds: Folds, left_out: dict[str, int], replay: Dataset,
               photos_val: str | None,
               before: dict[str, Any], after: dict[str, Any], comparison: dict[str, Any], verdict: Verdict,
               history: dict[str, list[float]], wall_time_s: float, trained_at: str,
               val_report: dict[str, Any]) -> ModelCard:
    """The retrained model's card: the typed fields of every card, and its own sections (kind, base,
    before, after, comparison, guardrail) beside them."""
    from facexpr.learn.train import _machine

    return ModelCard.from_dict({
        "name": name,
        "trained_at": trained_at,
        "classes": list(EXPRESSIONS),
        "input": {"size": [CROP_SIZE, CROP_SIZE], "channels": 1, "pixels": "uint8 0..255, gray"},
        "crop": base.geometry.to_dict(),  # fine-tuned on crops cut the base model's way
        # the doubt threshold was measured for the base; it is the best estimate until measured again
        **({"unsure": {**base.card.sections["unsure"], "inherited_from": base.version}}
           if isinstance(base.card.sections.get("unsure"), dict) else {}),
        "kind": "retrain",
        "base": {"name": base.version,
                 "trained_at": base.card.trained_at.isoformat() if base.card.trained_at else None,
                 "val_accuracy": base.card.val.accuracy},
        "data": {
            "corrections": {"source": corrections_uri, "counts": corrections.data.counts(),
                            "groups": len(set(corrections.groups)), "skipped": corrections.data.skipped,
                            "left_out_cut_another_way": left_out},
            "cross_fitting": {"folds": folds.k, "by": folds.by, "units": folds.units, "sizes": folds.sizes(),
                              "rule": "whole recorded groups (people, browser sessions) when there are two "
                                      "or more, else whole photos; dealt round-robin in sha256 order"},
            "replay": {"source": replay.source, "n": len(replay), "counts": replay.counts()},
            "val": {"source": data_uri.rstrip("/") + "/val"},
            **({"photos_val": {"source": photos_val}} if photos_val else {}),
        },
        "recipe": asdict(recipe),
        "seed": recipe.seed,
        "epochs": recipe.epochs,
        "wall_time_s": round(wall_time_s, 1),
        "machine": _machine(),
        "val": {**val_report, "test_time_augmentation": "horizontal flip average"},
        "before": before,
        "after": after,
        "comparison": comparison,
        "guardrail": verdict.to_dict(),
        "history": history,
    }, name)


def _left_out_text(left_out: dict[str, int]) -> str:
    return ", ".join(f"{n} with {g}" for g, n in sorted(left_out.items()))


def _val_set(data_uri: str) -> Dataset:
    val = load_layout(data_uri.rstrip("/") + "/val", required=False)
    if not len(val):
        raise DataError(f"{data_uri} has no val/ images: FER2013 val is needed for the guardrail.")
    return val


def retrain(settings: Settings, data_uri: str, name: str | None = None, recipe: RetrainRecipe | None = None,
            photos_val: str | None = None, base_path: str | None = None, progress: Progress | None = None,
            workdir: Path | None = None) -> RetrainResult:
    """Fine-tune the served model (or BASE_PATH) on the configured store's corrections; write
    NAME.keras + card into WORKDIR (default FACEXPR_DATA_DIR/retrain) and return them. The caller
    puts them into the registry (`ModelRegistry.add`)."""
    from facexpr.model.registry import check_name, served_model_path

    require("train", "Retraining")  # also the app's background job: its page shows this message
    recipe = recipe or RetrainRecipe()
    recipe.check()
    started = time.perf_counter()
    say = progress or (lambda f, m: None)
    name = check_name(name or "retrain-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S"))

    say(0.0, "loading the served model and the corrections")
    base = load_classifier(base_path or served_model_path(settings), backend="keras")  # fine-tuned: Keras
    every, left_out = load_corrections(settings.relabeled_uri).cut_for(base.geometry)
    if not len(every):
        other = f" ({sum(left_out.values())} cut another way: {_left_out_text(left_out)})" if left_out else ""
        raise DataError(f"No corrections in {settings.relabeled_uri} yet that {base.version} can learn "
                        f"from{other}: confirm or correct some answers first.")
    folds = assign_folds(every, recipe.folds)
    replay = (replay_sample(data_uri, recipe.replay, recipe.seed) if recipe.replay
              else Dataset.concat([], data_uri))
    val = _val_set(data_uri)
    photos = _photos(photos_val, base.geometry) if photos_val else None

    say(0.03, f"scoring {base.version} before: FER2013 val ({len(val)}), corrections ({len(every)})")
    val_before, val_ok_before = score(base, val)
    corrections_before, ok_before = score(base, every.data)
    photos_before = photos.score(base) if photos else None

    # Cross-fitting: every correction scored by a fine-tune that never saw it (K + 1 fine-tunes in all).
    runs = folds.k + 1
    predicted = np.full(len(every), -1, np.int64)  # each correction's answer from the fold that never saw it
    for fold in range(folds.k):
        test = np.flatnonzero(folds.of == fold)
        span = (0.08 + 0.84 * fold / runs, 0.84 / runs)
        network, _ = fine_tune(base.network, every.subset(np.flatnonzero(folds.of != fold)).data, replay,
                               recipe, lambda f, m, s=span, k=fold: say(s[0] + s[1] * f,
                                                                        f"fold {k + 1}/{folds.k}: {m}"))
        fold_model = Classifier(network, card=ModelCard(name=f"{name}-fold{fold}"))
        predicted[test] = fold_model.predict(every.data.images[test]).argmax(1)
    last = 0.08 + 0.84 * folds.k / runs
    network, history = fine_tune(base.network, every.data, replay, recipe,
                                 lambda f, m: say(last + (0.92 - last) * f, f"the candidate: {m}"))
    say(0.93, "scoring the retrained model")
    new = Classifier(network, card=ModelCard(name=name))
    val_after, val_ok_after = score(new, val)
    photos_after = photos.score(new) if photos else None

    scored = folds.of >= 0  # all of them, unless there was too little to split
    labels = every.data.labels
    corrections_after = report(labels[scored], predicted[scored])
    comparison = {"val": paired(val_ok_before, val_ok_after),
                  "corrections": paired(ok_before[scored], (predicted == labels)[scored])}
    if photos is not None:
        comparison["photos"] = paired(photos_before[1], photos_after[1])
    verdict = judge({"before": val_before["accuracy"], "after": val_after["accuracy"]},
                    comparison["corrections"], comparison.get("photos"))
    wall = time.perf_counter() - started
    card = build_card(
        name=name, base=base, recipe=recipe, data_uri=data_uri, corrections_uri=settings.relabeled_uri,
        corrections=every, folds=folds, left_out=left_out, replay=replay, photos_val=photos_val,
        before=_summary(val_before, corrections_before, photos_before and photos_before[0]),
        after=_summary(val_after, corrections_after, photos_after and photos_after[0]),
        comparison=comparison, verdict=verdict, history=history, wall_time_s=wall,
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"), val_report=val_after)
    out = Path(workdir or Path(settings.data_dir) / "retrain") / name
    checks = {"probe": val.images[:512], "val": (val.images, val.labels)} if len(val) else {}
    keras_path = save_model(network, card, out, **checks)  # its .tflite, checked on FER2013 val
    say(1.0, "done: " + ("passed" if verdict.passed else "failed") + " the guardrail — " + verdict.reason)
    return RetrainResult(card, keras_path)


def _summary(val: dict[str, Any], corrections: dict[str, Any], photos: dict[str, Any] | None
             ) -> dict[str, Any]:
    out = {"val": {"accuracy": val["accuracy"], "macro_f1": val["macro_f1"], "n": val["n"],
                   "recall": {k: v["recall"] for k, v in val["per_class"].items()}},
           # cross-fitted; no faces scored: no accuracy (None), not 0.0
           "corrections": {"accuracy": corrections["accuracy"] if corrections["n"] else None,
                           "n": corrections["n"]}}
    if photos is not None:
        out["photos"] = {"accuracy": photos["accuracy"], "n": photos["n"],
                         "faces_found": photos["faces_found"],
                         "recall": {k: v["recall"] for k, v in photos["per_class"].items()}}
    return out


@dataclass
class _Photos:
    """A labelled photo folder, detected and cropped once, scored by each model."""

    y_true: np.ndarray
    crops: list[np.ndarray | None]

    def score(self, classifier: Classifier) -> tuple[dict[str, Any], np.ndarray]:
        predicted = answers(self.crops, classifier)
        found = sum(c is not None for c in self.crops)
        return {**report(self.y_true, predicted), "faces_found": found}, predicted == self.y_true


def _photos(root: str, geometry: CropGeometry) -> _Photos:
    """ROOT: a labelled photo folder, local or s3:// (FACEXPR_PHOTOS_VAL, `retrain --photos-val`)."""
    cut = labelled_crops(root, "detect", geometry)
    return _Photos(cut.y_true, cut.crops)


def before_after_rows(card: dict[str, Any]) -> list[dict[str, Any]]:
    """The card's before/after table: one row per test set (FER2013 val, held-out corrections, photos),
    its figures as shown (text: a test set with no faces says "—", not None, 1 or 0.0000)."""
    titles = {"val": "FER2013 val", "corrections": "corrections (cross-fitted)",
              "heldout": "held-out corrections",  # cards written before cross-fitting
              "photos": "photos (labelled folder)"}
    rows = []
    for key, title in titles.items():
        figures = card.get("comparison", {}).get(key)
        if figures is None:
            continue
        shown = {"before": "—", "after": "—", "gained": "—", "lost": "—", "p (gain by chance)": "—"}
        if figures["n"]:
            shown = {"before": f"{figures['before']:.4f}", "after": f"{figures['after']:.4f}",
                     "gained": str(figures["gained"]), "lost": str(figures["lost"]),
                     "p (gain by chance)": f"{figures['p_value']:.4f}"}
        rows.append({"test set": title, "faces": figures["n"], **shown})
    return rows
