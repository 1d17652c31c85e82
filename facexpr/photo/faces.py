"""The photo path: a gray photo → where each face is and the 48×48 crop the model reads.

A detector (facexpr.photo.detectors) finds each face, and the face is cut the way the served
model's card says (`CropGeometry`, facexpr.photo.geometry; the card's `crop`):

- "fer-template" (every model trained on FER2013): BlazeFace finds the face, the face mesh its
  eye centres and mouth, and those are mapped onto where FER2013's own faces have them
  (facexpr.photo.align). A face that fills the image is found too (the detector tries again
  inside a grey border), so an avatar or an ID photo is read like any other, and so is a face far
  from the camera, down to about a twentieth of the photo's side (overlapping tiles).
- "haar-box": OpenCV's Haar box, a square of CROP_SCALE × its side (the framing chosen in
  benchmarks/SELECTION.md, rule 1): how photos were cut before alignment, kept for the models
  fine-tuned on corrections cut that way (a rollback to one gets its own crop).

FER2013's own 48×48 crops (both sides ≤ READY_CROP_MAX_SIDE) go to the model as they are, so
FER2013 scores mean what they always meant. Faces come in reading order: face 1 is the left one.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from facexpr.core.labels import CROP_SIZE
from facexpr.core.types import Box
from facexpr.photo import resample
from facexpr.photo.align import align_face
from facexpr.photo.detectors import FoundFace, get_detector
from facexpr.photo.geometry import FER_TEMPLATE, CropGeometry

READY_CROP_MAX_SIDE = 64  # images this small (both sides) are taken as ready face crops
# The "haar-box" crop: a square of CROP_SCALE × the Haar box side, its centre CROP_OFFSET × the side
# above the box's centre. Chosen by person-wise cross-validation over the 140 studio photos
# (benchmarks/photo_framing.py, rule 1 in benchmarks/SELECTION.md).
CROP_SCALE = 0.80
CROP_OFFSET = -0.05

FacesMode = Literal["auto", "detect", "crop", "whole"]
FACES_MODES: tuple[str, ...] = ("auto", "detect", "crop", "whole")


def is_ready_crop(gray: np.ndarray) -> bool:
    return gray.shape[0] <= READY_CROP_MAX_SIDE and gray.shape[1] <= READY_CROP_MAX_SIDE


def crop_face(gray: np.ndarray, box: Box, scale: float = CROP_SCALE, offset: float = CROP_OFFSET
              ) -> np.ndarray:
    """The square of side SCALE × BOX's, centred OFFSET × that side below BOX's centre (above when
    negative), edge-padded where it leaves the photo, at 48×48."""
    side = max(box.w, box.h) * scale
    cx, cy = box.x + box.w / 2, box.y + box.h / 2 + offset * max(box.w, box.h)
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    x1, y1 = x0 + round(side), y0 + round(side)
    h, w = gray.shape
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    if pad:
        gray = resample.pad(gray, pad)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    return resize_crop(gray[y0:y1, x0:x1])


def resize_crop(gray: np.ndarray) -> np.ndarray:
    """Any gray patch → 48×48 uint8 (area averaging when shrinking, bilinear when growing)."""
    h, w = gray.shape
    shrink = h > CROP_SIZE or w > CROP_SIZE
    return (resample.area if shrink else resample.linear)(gray, (CROP_SIZE, CROP_SIZE))


def whole_image_crop(gray: np.ndarray) -> tuple[Box, np.ndarray]:
    """When no face is found: the centred square of the image, as the model's crop."""
    h, w = gray.shape
    side = min(h, w)
    box = Box((w - side) // 2, (h - side) // 2, side, side)
    return box, resize_crop(gray[box.y:box.y + side, box.x:box.x + side])


def cut(gray: np.ndarray, face: FoundFace, geometry: CropGeometry = FER_TEMPLATE) -> np.ndarray:
    """FACE's 48×48 crop by GEOMETRY (a face without landmarks gets the box framing)."""
    if geometry.name == "fer-template" and face.landmarks is not None:
        return align_face(gray, face.landmarks, geometry.template_scale)
    return crop_face(gray, face.box)


def find_faces(gray: np.ndarray, geometry: CropGeometry = FER_TEMPLATE) -> list[FoundFace]:
    """Every face GEOMETRY's detector finds, in reading order (left to right, then top down)."""
    faces = get_detector(geometry.detector).find(gray)
    return sorted(faces, key=lambda f: (f.box.x, f.box.y))


def detect_faces(gray: np.ndarray, geometry: CropGeometry = FER_TEMPLATE) -> list[Box]:
    """Where the faces are, in reading order."""
    return [f.box for f in find_faces(gray, geometry)]


def find_crops(gray: np.ndarray, mode: str = "auto", geometry: CropGeometry = FER_TEMPLATE
               ) -> tuple[str, list[Box], list[np.ndarray]]:
    """Where the faces are and their 48×48 crops, in reading order, by MODE:

    auto   — ready crop if ≤ 64 px on both sides, else detect;
    detect — find faces (none → empty lists);
    crop   — the whole image is one face crop;
    whole  — the centred square of the image (the "classify anyway" choice when no face is found).
    """
    if mode not in FACES_MODES:
        raise ValueError(f"faces mode must be one of {FACES_MODES}, not {mode!r}")
    if mode == "auto":
        mode = "crop" if is_ready_crop(gray) else "detect"
    if mode == "crop":
        return mode, [Box(0, 0, gray.shape[1], gray.shape[0])], [resize_crop(gray)]
    if mode == "whole":
        box, crop = whole_image_crop(gray)
        return mode, [box], [crop]
    faces = find_faces(gray, geometry)
    return mode, [f.box for f in faces], [cut(gray, f, geometry) for f in faces]
