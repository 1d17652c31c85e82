"""What the commands share: loading the served model quietly, reading image paths, printing reports,
and the argument types."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from facexpr.photo.imaging import PHOTO_SUFFIXES

IMAGE_SUFFIXES = set(PHOTO_SUFFIXES)  # what `predict DIR` takes from a folder


@contextmanager
def native_logs_held() -> Iterator[None]:
    """Hold what TensorFlow's C++ side writes to stderr while it starts (absl, oneDNN, XNNPACK
    notices a user has no use for); shown only if starting fails, where it may say why."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))


def load_model_for(args: argparse.Namespace, precision: str | None = None):
    """The served classifier (its LiteRT file where it has one); with PRECISION, the Keras model."""
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)  # a deprecation notice from the TFLite converter
    with native_logs_held():
        from facexpr.model.classifier import load_classifier
        from facexpr.photo.detectors import get_detector

        classifier = load_classifier(model_path(args), precision or "float32",
                                     backend="keras" if precision else "auto")
        # The face finder's runtime announces itself on its first run: let that happen here too.
        get_detector(classifier.geometry.detector).find(np.zeros((96, 96), np.uint8))
        return classifier


def expand_images(paths: list[str]) -> list[str]:
    """PATHS with each folder replaced by the images directly in it (by name, sorted); a folder
    without any stays, to be answered with an error."""
    out = []
    for path in paths:
        p = Path(path)
        found = sorted(str(f) for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                       and not f.name.startswith(".")) if p.is_dir() else []
        out.extend(found or [path])
    return out


def read_image(path: str) -> bytes:
    from facexpr.core.errors import ImageError
    from facexpr.photo.imaging import read_image_file

    if Path(path).is_dir():  # expand_images left it: nothing to classify in it
        raise ImageError(f"is a folder with no images in it ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    return read_image_file(path)


def model_path(args: argparse.Namespace) -> str | None:
    """--model, else what the app serves: FACEXPR_MODEL, the registry's version, the shipped model."""
    from facexpr.core.config import load_settings
    from facexpr.model.registry import served_model_path

    return args.model or served_model_path(load_settings())


def print_confusion(matrix: list[list[int]]) -> None:
    from facexpr.core.labels import EXPRESSIONS

    names = [e[:8] for e in EXPRESSIONS]
    print("confusion (rows: true expression, columns: predicted)")
    print(" " * 11 + "".join(f"{n:>9s}" for n in names))
    for name, row in zip(EXPRESSIONS, matrix, strict=True):
        print(f"  {name:9s}" + "".join(f"{v:9d}" for v in row))


def print_per_class(per_class: dict[str, dict[str, float]]) -> None:
    for name, c in per_class.items():
        if not c.get("support", 1):
            continue  # not in the folder: no recall or F1 (answers of it show in the confusion)
        print(f"  {name:9s} precision {c['precision']:.3f}  recall {c['recall']:.3f}  "
              f"f1 {c['f1']:.3f}  support {c['support']}")


def widths_arg(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected positive channel counts like 32,64,128, got {text!r}")
    return widths


def _number_in(text: str, inside, expected: str) -> float:
    """TEXT as a float for which INSIDE(value) holds, else argparse's error naming EXPECTED."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not inside(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def fraction_arg(text: str) -> float:
    """A weight in [0, 0.5): above that the FER+ votes, not the FER2013 label, would decide the target."""
    return _number_in(text, lambda v: 0.0 <= v < 0.5, "a number from 0 to below 0.5")


def share_arg(text: str) -> float:
    return _number_in(text, lambda v: 0.0 < v < 1.0, "a share between 0 and 1 (exclusive)")


def port_arg(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return int(text)


def positive_arg(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}")
    return int(text)
