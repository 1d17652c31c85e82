"""Scores: accuracy, per-class precision/recall/F1, confusion (rows true, FER2013 order)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from facexpr.core.labels import EXPRESSIONS, NUM_CLASSES


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """7×7 counts; row = true class, column = predicted class. A prediction of -1 (no face)
    counts in no column, so it lowers recall without raising any class's precision."""
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for t, p in zip(np.asarray(y_true), np.asarray(y_pred), strict=True):
        if p >= 0:
            matrix[t, p] += 1
    return matrix


def report(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """The figures a model card and `evaluate` print. y_pred = -1 means "no answer" (wrong).
    Macro F1 averages over the classes present in y_true (all seven in FER2013 val)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    matrix = confusion_matrix(y_true, y_pred)
    support = np.bincount(y_true, minlength=NUM_CLASSES)
    predicted = matrix.sum(axis=0)
    per_class = {}
    for i, name in enumerate(EXPRESSIONS):
        tp = int(matrix[i, i])
        precision = tp / predicted[i] if predicted[i] else 0.0
        recall = tp / support[i] if support[i] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": round(precision, 4), "recall": round(recall, 4),
                           "f1": round(f1, 4), "support": int(support[i])}
    n = len(y_true)
    present = [c["f1"] for c in per_class.values() if c["support"]]  # absent classes have no F1 to average
    return {
        "n": n,
        "accuracy": round(float((y_true == y_pred).sum() / n), 4) if n else 0.0,
        "macro_f1": round(float(np.mean(present)), 4) if present else 0.0,
        "per_class": per_class,
        "confusion": matrix.tolist(),
    }


def labelled_crops(root: Path, faces: str = "auto") -> tuple[list[Path], np.ndarray, list[np.ndarray | None]]:
    """(files, true labels, the largest face's crop or None) for every image under ROOT/<expression>/."""
    from facexpr.core.errors import DataError, FacexprError
    from facexpr.core.labels import INDEX
    from facexpr.model.predict import find_crops
    from facexpr.photo.imaging import decode_gray

    if not root.is_dir():
        raise DataError(f"{root} is not a folder.")
    files = sorted(p for d in root.iterdir() if d.is_dir() and d.name in INDEX
                   for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"No images under {root}/<expression>/ (expressions: {', '.join(EXPRESSIONS)}).")

    def first_crop(path: Path) -> np.ndarray | None:
        try:
            _, _, crops = find_crops(decode_gray(path.read_bytes()), faces)
        except (FacexprError, OSError):
            return None
        return crops[0] if crops else None

    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        crops = list(pool.map(first_crop, files))
    return files, np.array([INDEX[p.parent.name] for p in files]), crops


def answers(crops: list[np.ndarray | None], classifier: Any) -> np.ndarray:
    """The predicted class per crop; -1 where there is no crop (no face: counted wrong)."""
    found = [i for i, c in enumerate(crops) if c is not None]
    y_pred = np.full(len(crops), -1)
    if found:
        y_pred[found] = classifier.predict(np.stack([crops[i] for i in found])).argmax(1)
    return y_pred


def evaluate_dir(root: Path, classifier: Any, faces: str = "auto") -> dict[str, Any]:
    """Score every image under ROOT/<expression>/. One answer per image: its largest face;
    an image with no face (or unreadable) counts as wrong."""
    from facexpr.photo.faces import CROP_OFFSET, CROP_SCALE

    _, y_true, crops = labelled_crops(root, faces)
    return {**report(y_true, answers(crops, classifier)), "faces_found": sum(c is not None for c in crops),
            "faces_mode": faces, "crop": {"scale": CROP_SCALE, "offset": CROP_OFFSET},  # of detected faces
            "model": classifier.version}
