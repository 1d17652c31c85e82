"""Scores: accuracy, per-class precision/recall/F1, confusion (rows true, FER2013 order)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facexpr.core.labels import EXPRESSIONS, NUM_CLASSES
from facexpr.photo.geometry import FER_TEMPLATE, CropGeometry


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


@dataclass
class LabelledCrops:
    """Every image under a labelled folder, cut once: its true label, its largest face's crop (None
    where the detector found none or the file is unreadable), and the whole image as one face."""

    files: list[Path]
    y_true: np.ndarray
    crops: list[np.ndarray | None]
    whole: list[np.ndarray | None]  # the whole image as one face: what a person is offered on "no face"
    ready: int  # images taken as ready crops (≤ 64 px), not searched for faces


def labelled_crops(root: str | Path, faces: str = "auto", geometry: CropGeometry = FER_TEMPLATE
                   ) -> LabelledCrops:
    """Cut every image under ROOT/<expression>/ (a folder, or an s3:// URI) the way GEOMETRY (a
    model's card) says."""
    from facexpr.core.errors import DataError, FacexprError
    from facexpr.core.labels import INDEX
    from facexpr.photo.faces import find_crops, resize_crop
    from facexpr.photo.imaging import decode_gray
    from facexpr.storage.store import open_store

    if str(root).startswith("s3://"):
        store = open_store(str(root))
        keys = sorted(k for k in store.list_keys() if k.count("/") == 1 and k.split("/")[0] in INDEX
                      and not k.rsplit("/", 1)[-1].startswith("."))
        files = [Path(k) for k in keys]
        read = {Path(k): (lambda k=k: store.get(k)) for k in keys}
    else:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root} is not a folder.")
        files = sorted(p for d in root.iterdir() if d.is_dir() and d.name in INDEX
                       for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
        read = {p: p.read_bytes for p in files}
    if not files:
        raise DataError(f"No images under {root}/<expression>/ (expressions: {', '.join(EXPRESSIONS)}).")

    def cut(path: Path) -> tuple[np.ndarray | None, np.ndarray | None, bool]:
        try:
            gray = decode_gray(read[path]())
            mode, boxes, crops = find_crops(gray, faces, geometry)
        except (FacexprError, OSError):
            return None, None, False
        largest = max(range(len(boxes)), key=lambda i: boxes[i].w * boxes[i].h, default=None)
        return (None if largest is None else crops[largest]), resize_crop(gray), mode == "crop"

    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        cut_all = list(pool.map(cut, files))
    return LabelledCrops(files, np.array([INDEX[p.parent.name] for p in files]), [c for c, _, _ in cut_all],
                         [w for _, w, _ in cut_all], sum(r for _, _, r in cut_all))


def answers(crops: list[np.ndarray | None], classifier: Any) -> np.ndarray:
    """The predicted class per crop; -1 where there is no crop (no face: counted wrong)."""
    found = [i for i, c in enumerate(crops) if c is not None]
    y_pred = np.full(len(crops), -1)
    if found:
        y_pred[found] = classifier.predict(np.stack([crops[i] for i in found])).argmax(1)
    return y_pred


def evaluate_dir(root: Path, classifier: Any, faces: str = "auto") -> dict[str, Any]:
    """Score every image under ROOT/<expression>/, cut the way the classifier's card says. One answer
    per image: its largest face; an image where no face was found (or unreadable) counts as wrong.
    `whole_image_fallback` scores the same images with the whole image read where no face was found
    (what the page offers then), on its own line: those are never counted as found."""
    cut = labelled_crops(root, faces, classifier.geometry)
    predicted = answers(cut.crops, classifier)
    missing = [i for i, c in enumerate(cut.crops) if c is None]
    fallback = predicted.copy()
    if missing:
        fallback[missing] = answers([cut.whole[i] for i in missing], classifier)
    found = sum(c is not None for c in cut.crops)
    return {**report(cut.y_true, predicted), "faces_found": found - cut.ready, "ready_crops": cut.ready,
            "faces_mode": faces, "crop": classifier.geometry.to_dict(), "model": classifier.version,
            "whole_image_fallback": {"accuracy": report(cut.y_true, fallback)["accuracy"],
                                     "images": len(missing)}}
