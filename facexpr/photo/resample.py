"""Gray-image resampling for the photo path, on Pillow and numpy (no OpenCV).

The answering runtime (`pip install facexpr`) leaves OpenCV out: it was 169 MB of a 475 MB install
and the photo path used it only to resize, pad and warp. The same operations, with OpenCV's
conventions kept (pixel centres at integer coordinates, edge or constant padding):

- `area`: shrink by averaging (OpenCV's INTER_AREA): Pillow's box filter. It is exact for a
  whole-number factor; otherwise a source pixel counts wholly for the output pixel its centre
  falls in, where OpenCV splits it (at most a gray level or two apart).
- `linear`: grow by bilinear interpolation (INTER_LINEAR).
- `warp_affine`: the 2×3 forward transform OpenCV's warpAffine takes, bilinear, with the photo's
  edge repeated or a constant beyond it: Pillow's affine transform on the patch the output needs,
  padded, so no output pixel samples outside it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

Size = tuple[int, int]  # (width, height), as Pillow and OpenCV take it


def _image(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8), mode="L")


def area(gray: np.ndarray, size: Size) -> np.ndarray:
    """GRAY shrunk to SIZE by area averaging."""
    if (gray.shape[1], gray.shape[0]) == size:
        return gray
    return np.asarray(_image(gray).resize(size, Image.Resampling.BOX))


def linear(gray: np.ndarray, size: Size) -> np.ndarray:
    """GRAY resized to SIZE by bilinear interpolation (for growing)."""
    if (gray.shape[1], gray.shape[0]) == size:
        return gray
    return np.asarray(_image(gray).resize(size, Image.Resampling.BILINEAR))


def pad(gray: np.ndarray, width: int, value: int | None = None) -> np.ndarray:
    """GRAY with WIDTH pixels added on every side: its edge repeated, or VALUE."""
    if value is None:
        return np.pad(gray, width, mode="edge")
    return np.pad(gray, width, mode="constant", constant_values=value)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The 2×3 affine transform that undoes MATRIX."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def warp_affine(gray: np.ndarray, matrix: np.ndarray, size: Size, value: int | None = None) -> np.ndarray:
    """The SIZE image whose pixel (x, y) is GRAY bilinearly sampled where MATRIX (source → output,
    pixel centres at integer coordinates) maps from; beyond GRAY's edge, the edge repeated or VALUE."""
    inverse = invert_affine(np.asarray(matrix, np.float64))
    w, h = size
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float) @ inverse.T
    # The source patch the output reads, one pixel more each side for the bilinear neighbours.
    x0, y0 = np.floor(corners.min(0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
    rows, cols = gray.shape
    margin = max(0, -x0, -y0, x1 - cols, y1 - rows)
    if margin:
        gray = pad(gray, margin, value)
    patch = gray[y0 + margin:y1 + margin, x0 + margin:x1 + margin]
    # Pillow's transform takes output → source in pixel-edge coordinates (a centre is i + 0.5).
    shift = np.array([0.5 - x0, 0.5 - y0]) - inverse[:, :2] @ np.array([0.5, 0.5])
    coefficients = np.hstack([inverse[:, :2], (inverse[:, 2] + shift)[:, None]]).ravel()
    out = _image(patch).transform(size, Image.Transform.AFFINE, tuple(coefficients),
                                  resample=Image.Resampling.BILINEAR)
    return np.asarray(out)


def rotation(centre: tuple[float, float], angle_deg: float, scale: float) -> np.ndarray:
    """The 2×3 transform that turns by ANGLE_DEG (counter-clockwise on screen) and scales by SCALE
    about CENTRE (OpenCV's getRotationMatrix2D)."""
    a = scale * np.cos(np.radians(angle_deg))
    b = scale * np.sin(np.radians(angle_deg))
    cx, cy = centre
    return np.array([[a, b, (1 - a) * cx - b * cy], [-b, a, b * cx + (1 - a) * cy]])
