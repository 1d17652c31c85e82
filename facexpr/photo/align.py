"""A face's eyes and mouth mapped onto FER2013's own: the 48×48 crop the model learned from.

FER2013's faces were framed by their source's detector, not by landmarks, but on average they
sit in one place: `benchmarks/fer_template.py` ran the photo path's detector on 2,000 FER2013
training faces (upscaled 4×) and took the median eye centres and mouth, mirrored to be
symmetric. A photo's face is mapped onto those three points by a similarity transform (turn,
scale, shift; least squares), warped at WARP_SCALE × 48 px and shrunk by area averaging, so a
large face is not aliased and a small one is not blockier than it must be.
"""

from __future__ import annotations

import numpy as np

from facexpr.core.labels import CROP_SIZE
from facexpr.core.types import Landmarks
from facexpr.photo import resample

# benchmarks/fer_template.py on FER2013 train (2,000 faces, seed 0; found in 1,990), BlazeFace + mesh:
# (image-left eye, image-right eye, mouth) in 48×48 pixel coordinates counted from the edges.
FER_TEMPLATE = np.array([(15.0, 18.7), (33.0, 18.7), (24.0, 36.9)], dtype=np.float64)
WARP_SCALE = 4  # warp at 4 × 48 px, then area-shrink to 48
MAX_SHRINK = 2.0  # the warp shrinks at most this much; a larger face is area-shrunk first


def similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2×3 similarity (no reflection) that maps SOURCE points onto TARGET, least squares
    (Umeyama 1991)."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    cov = t.T @ s / len(source)
    u, d, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(d) @ sign) / max((s ** 2).sum() / len(source), 1e-12)
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mu_t - matrix[:, :2] @ mu_s
    return matrix


def template(scale: float = 1.0) -> np.ndarray:
    """FER_TEMPLATE scaled about the crop's centre (1.0: FER2013's own framing)."""
    centre = np.array([CROP_SIZE / 2, CROP_SIZE / 2])
    return centre + (FER_TEMPLATE - centre) * scale


def align_face(gray: np.ndarray, landmarks: Landmarks, scale: float = 1.0) -> np.ndarray:
    """The 48×48 uint8 crop with LANDMARKS on the FER2013 template; outside the photo is edge-padded."""
    # Landmarks and the template count from pixel edges (0 … width); the warp from pixel centres.
    points = np.array([landmarks.eye_left, landmarks.eye_right, landmarks.mouth], dtype=np.float64) - 0.5
    size = CROP_SIZE * WARP_SCALE
    matrix = similarity(points, template(scale) * WARP_SCALE - 0.5)
    zoom = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))  # output px per source px
    if zoom < 1 / MAX_SHRINK:
        # Area-shrink the face's surroundings first, so the warp never skips source pixels.
        factor = zoom * MAX_SHRINK
        inverse = resample.invert_affine(matrix)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], float) @ inverse.T
        x0, y0 = np.floor(corners.min(0)).astype(int)
        x1, y1 = np.ceil(corners.max(0)).astype(int)
        h, w = gray.shape
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            out_w, out_h = max(1, round((x1 - x0) * factor)), max(1, round((y1 - y0) * factor))
            gray = resample.area(gray[y0:y1, x0:x1], (out_w, out_h))
            fx, fy = out_w / (x1 - x0), out_h / (y1 - y0)
            # the transform, moved onto the shrunk region's pixel centres
            to_region = np.array([[1 / fx, 0, x0 + 0.5 / fx - 0.5],
                                  [0, 1 / fy, y0 + 0.5 / fy - 0.5], [0, 0, 1]])
            matrix = matrix @ to_region
    warped = resample.warp_affine(gray, matrix, (size, size))
    return resample.area(warped, (CROP_SIZE, CROP_SIZE))
