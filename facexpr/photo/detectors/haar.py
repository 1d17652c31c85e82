"""OpenCV's frontal-face Haar cascade: boxes only (no landmarks), the weights inside the
opencv-python-headless wheel. Kept as the detector of the "haar-box" crop geometry (models
fine-tuned on corrections cut that way) and measured beside BlazeFace (benchmarks/).

It runs on a downscaled copy of the photo and the boxes are mapped back, which is several times
cheaper on large photos. The cascade's cost is set by how small a face it looks for: most of it
goes into the smallest sizes. A headshot's face is large, so cheap passes on small copies look for
large faces first (at least about a third, then a fifth of the shorter side), and only when they
find nothing does the full pass look for faces down to about a tenth (group photos, a face far
from the camera). So when a photo holds a large face, much smaller faces beside it are not searched
for.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np

from facexpr.core.errors import ModelError
from facexpr.core.types import Box
from facexpr.photo.detectors.base import FaceDetector, FoundFace, shrink

DETECT_MAX_SIDE = 320  # the full pass runs on a copy no larger than this
DETECT_SCALE_STEP = 1.1  # the full pass's step between window sizes
# Cheaper passes first, (copy's longer side, scale step): the cascade's smallest window is 24 px,
# i.e. ~34 % and ~20 % of a portrait's shorter side. A coarser step suffices for faces this large
# and halves the cost; together they find all 70 development photos' faces (benchmarks/).
COARSE_PASSES: tuple[tuple[int, float], ...] = ((96, 1.2), (160, 1.2))
WIDE_ASPECT = 1.5  # width ≥ 1.5 × height: a photo that may hold several people side by side
MIN_FACE_FRACTION = 0.08  # ignore "faces" smaller than this share of the shorter side

cv2.setNumThreads(1)  # requests run in parallel threads; one OpenCV thread each is fastest

def _opencv_area(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """OpenCV's area resize, most of it by a whole-number factor (several times faster; drops at
    most k-1 edge pixels). The cascade's passes were tuned on these copies (they find all 70
    development photos' faces), so it keeps them rather than the photo path's Pillow resize."""
    height, width = gray.shape
    k = min(width // size[0], height // size[1])
    if k >= 2:
        height, width = height - height % k, width - width % k
        gray = cv2.resize(gray[:height, :width], (width // k, height // k), interpolation=cv2.INTER_AREA)
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def _load_cascade() -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise ModelError(f"OpenCV's face detector file is missing or unreadable at {path}: reinstall "
                         "opencv-python-headless (pip install 'facexpr[haar]').")
    return cascade


_IDLE_CASCADES: queue.SimpleQueue[cv2.CascadeClassifier] = queue.SimpleQueue()


@contextmanager
def _cascade() -> Iterator[cv2.CascadeClassifier]:
    """A cascade no other thread is using: one shared by concurrent sessions returns wrong boxes
    (tests/test_concurrency.py). Idle ones are reused: only as many load as ever ran at once."""
    try:
        cascade = _IDLE_CASCADES.get_nowait()
    except queue.Empty:
        cascade = _load_cascade()
    try:
        yield cascade
    finally:
        _IDLE_CASCADES.put(cascade)


def _overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area."""
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    return ix * iy / max(1, min(a.w * a.h, b.w * b.h))


def _detect(gray: np.ndarray, max_side: int, step: float = DETECT_SCALE_STEP) -> list[Box]:
    """The cascade's boxes on a copy no larger than MAX_SIDE, in GRAY's coordinates."""
    small, sx, sy = shrink(gray, max_side, _opencv_area)
    min_side = max(20, int(min(small.shape) * MIN_FACE_FRACTION))
    with _cascade() as cascade:
        found = cascade.detectMultiScale(cv2.equalizeHist(small), scaleFactor=step, minNeighbors=5,
                                         minSize=(min_side, min_side))
    return [Box(round(x / sx), round(y / sy), round(w / sx), round(h / sy))
            for x, y, w, h in (found if len(found) else [])]


def haar_boxes(gray: np.ndarray, max_side: int = DETECT_MAX_SIDE) -> list[Box]:
    """Boxes (x, y, w, h) in GRAY's pixel coordinates, largest first.

    Large faces first, on the COARSE_PASSES' small copies; the MAX_SIDE pass for smaller faces
    only when those find none (module docstring).
    """
    longer = max(gray.shape)
    passes = [(side, step) for side, step in COARSE_PASSES if side < min(max_side, longer)]
    # A landscape photo has room for people side by side, each filling its height: on the 96-px
    # copy of a 512×256 pair they are ~30 px, where the cascade may see only one. There both coarse
    # passes run and the one that finds more faces counts (portrait headshots stop at the first).
    wide = gray.shape[1] >= WIDE_ASPECT * gray.shape[0]
    best: list[Box] = []
    for side, step in passes:
        boxes = _distinct(_detect(gray, side, step))
        if len(boxes) > len(best):
            best = boxes
        if best and not wide:
            break
    return best or _distinct(_detect(gray, max_side, DETECT_SCALE_STEP))


def _distinct(boxes: list[Box]) -> list[Box]:
    """Largest first; a face inside a bigger face is the cascade firing twice on one person."""
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: b.w * b.h, reverse=True):
        if all(_overlap(box, k) < 0.5 for k in kept):
            kept.append(box)
    return kept


class HaarDetector(FaceDetector):
    name = "haar"

    def find(self, gray: np.ndarray) -> list[FoundFace]:
        return [FoundFace(box, None) for box in haar_boxes(gray)]
