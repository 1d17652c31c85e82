"""Face detection and the 48×48 crop the model expects (framed like a FER2013 face).

Detection uses OpenCV's frontal-face Haar cascade, whose weights ship inside the
opencv-python-headless wheel (nothing is downloaded). It runs on a downscaled copy of the
photo and the boxes are mapped back, which is several times cheaper on large photos.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from facexpr.model import CROP_SIZE

READY_CROP_MAX_SIDE = 64  # images this small (both sides) are taken as ready face crops
DETECT_MAX_SIDE = 320  # detection runs on a copy no larger than this
CROP_SCALE = 1.0  # the Haar box as is: its mean crop matches the mean FER2013 face best (README)
MIN_FACE_FRACTION = 0.08  # ignore "faces" smaller than this share of the shorter side

cv2.setNumThreads(1)  # requests run in parallel threads; one OpenCV thread each is fastest


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


@lru_cache(maxsize=1)
def _cascade() -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"OpenCV's face cascade is missing at {path}")
    return cascade


def is_ready_crop(gray: np.ndarray) -> bool:
    return gray.shape[0] <= READY_CROP_MAX_SIDE and gray.shape[1] <= READY_CROP_MAX_SIDE


def _overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area."""
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    return ix * iy / max(1, min(a.w * a.h, b.w * b.h))


def detect_faces(gray: np.ndarray, max_side: int = DETECT_MAX_SIDE) -> list[Box]:
    """Boxes (x, y, w, h) in GRAY's pixel coordinates, largest first."""
    height, width = gray.shape
    scale = min(1.0, max_side / max(height, width))
    small = gray if scale == 1.0 else cv2.resize(
        gray, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    min_side = max(20, int(min(small.shape) * MIN_FACE_FRACTION))
    found = _cascade().detectMultiScale(cv2.equalizeHist(small), scaleFactor=1.1, minNeighbors=5,
                                        minSize=(min_side, min_side))
    boxes = [Box(round(x / scale), round(y / scale), round(w / scale), round(h / scale))
             for x, y, w, h in (found if len(found) else [])]
    boxes.sort(key=lambda b: b.w * b.h, reverse=True)
    # A face inside a bigger face is the cascade firing twice on one person: keep the bigger.
    kept: list[Box] = []
    for box in boxes:
        if all(_overlap(box, k) < 0.5 for k in kept):
            kept.append(box)
    return kept


def crop_face(gray: np.ndarray, box: Box, scale: float = CROP_SCALE) -> np.ndarray:
    """The square around BOX enlarged by SCALE, edge-padded where it leaves the photo, at 48×48."""
    side = max(box.w, box.h) * scale
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    x1, y1 = x0 + round(side), y0 + round(side)
    h, w = gray.shape
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    return resize_crop(gray[y0:y1, x0:x1])


def resize_crop(gray: np.ndarray) -> np.ndarray:
    """Any gray patch → 48×48 uint8 (area averaging when shrinking, bilinear when growing)."""
    h, w = gray.shape
    shrink = h > CROP_SIZE or w > CROP_SIZE
    return cv2.resize(gray, (CROP_SIZE, CROP_SIZE),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def whole_image_crop(gray: np.ndarray) -> tuple[Box, np.ndarray]:
    """When no face is found: the centred square of the image, as the model's crop."""
    h, w = gray.shape
    side = min(h, w)
    box = Box((w - side) // 2, (h - side) // 2, side, side)
    return box, resize_crop(gray[box.y:box.y + side, box.x:box.x + side])
