"""What each FER2013 training face is taught: its label, softened by FER+ votes and/or by a teacher.

A teacher is any servable model (often the average of several, `benchmarks/ensemble.py`): its
flip-averaged probabilities on each training face, as served, are mixed into the target
(knowledge distillation with precomputed soft targets). One net of the served size then learns
what several nets answer together, at one model call. Relabeled faces are not touched by either:
they keep the label a person gave.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from facexpr.core.errors import DataError, ModelError
from facexpr.learn.data import Dataset, load_ferplus


def fer2013_targets(train_set: Dataset, ferplus: str | None, ferplus_weight: float
                    ) -> tuple[Dataset, np.ndarray, dict | None]:
    """(images to train on, their targets, FER+ report): one-hot, or softened by FER+ votes."""
    if not ferplus:
        return train_set, train_set.one_hot(), None
    soft, keep, matched = load_ferplus(ferplus).targets(train_set, ferplus_weight)
    used = {"source": ferplus, "weight": ferplus_weight, "matched": matched,
            "left_out_not_a_face": len(train_set) - len(keep)}
    return replace(train_set.subset(keep), skipped=train_set.skipped), soft[keep], used


def with_teacher(images: np.ndarray, targets: np.ndarray, teacher: str, weight: float
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    """((1 − WEIGHT) × TARGETS + WEIGHT × the TEACHER model's probabilities on IMAGES, report).

    The teacher is loaded as it would be served (its .tflite when it has one), so what the student
    learns is what the teacher answers. A DataError when it cannot be loaded."""
    from facexpr.model.classifier import load_classifier

    if not 0.0 < weight < 1.0:
        raise DataError(f"A teacher's weight must be between 0 and 1, not {weight}.")
    try:
        model = load_classifier(teacher)
    except ModelError as exc:
        raise DataError(f"Cannot load the teacher {teacher}: {exc}") from exc
    answers = model.predict(images)
    labels = targets.argmax(1)
    report = {"model": model.card.name, "source": str(Path(teacher)), "weight": weight,
              "val_accuracy": model.card.val.accuracy,
              **({"members": model.card.data["members"]} if "members" in model.card.data else {}),
              # How far the teacher is from the labels it softens: its accuracy on the training faces.
              "agrees_with_label": round(float((answers.argmax(1) == labels).mean()), 4)}
    return ((1 - weight) * targets + weight * answers).astype(np.float32), report
