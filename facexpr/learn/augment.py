"""Training augmentation in numpy + OpenCV: no TensorFlow, so it feeds Keras on any backend.

`standard` is the recipe's augmentation (flip, rotation, shift, zoom, contrast, random erasing).
`photo` makes FER2013's web-scraped crops vary the way the app's photo crops differ from them:
the framing jitters around the face as a detector box does (scale, shift, tilt), the resolution
drops and comes back (a small face upscaled), the crop is blurred, sharpened, noisy or
JPEG-compressed, and the lighting changes (gamma, brightness, contrast, a light from one side).
Each image draws its own parameters; a batch is a function of (seed, epoch, batch index) alone,
so a resumed run sees the batches a straight run would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facexpr.core.labels import CROP_SIZE

AUGMENTATIONS = ("standard", "photo")
# OpenCV (facexpr[train]) is imported where an image is augmented, not here: the CLI's parser reads
# AUGMENTATIONS in a lean install too.


@dataclass(frozen=True)
class Augmentation:
    kind: str = "standard"  # one of AUGMENTATIONS
    rotation_deg: float = 10.0
    shift: float = 0.1  # of the side, each way
    zoom: float = 0.1  # ± share of the side (standard); photo framing uses the ranges below
    erase_prob: float = 0.5
    # photo: the crop side against the face's, log-uniform (a looser or tighter detector box)
    frame_scale: tuple[float, float] = (0.85, 1.2)
    frame_shift: float = 0.08
    lowres_prob: float = 0.35  # shrink to 20–44 px and back
    blur_prob: float = 0.25
    sharpen_prob: float = 0.15
    noise_prob: float = 0.2
    jpeg_prob: float = 0.35  # quality 25–90
    gamma_prob: float = 0.5  # gamma 0.67–1.5
    side_light_prob: float = 0.3  # a linear brightness ramp of up to ±40 across the face

    def __post_init__(self) -> None:
        if self.kind not in AUGMENTATIONS:
            raise ValueError(f"Unknown augmentation {self.kind!r}; choose {' or '.join(AUGMENTATIONS)}.")


def _affine(rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    """A 2×3 matrix: flip, rotate, scale and shift about the crop's centre."""
    import cv2

    size = CROP_SIZE
    angle = rng.uniform(-aug.rotation_deg, aug.rotation_deg)
    if aug.kind == "photo":
        lo, hi = aug.frame_scale
        crop_side = math.exp(rng.uniform(math.log(lo), math.log(hi)))  # >1: looser, the face smaller
        zoom, shift = 1.0 / crop_side, aug.frame_shift
    else:
        zoom, shift = 1.0 + rng.uniform(-aug.zoom, aug.zoom), aug.shift
    centre = ((size - 1) / 2, (size - 1) / 2)
    m = cv2.getRotationMatrix2D(centre, angle, zoom)
    if rng.random() < 0.5:  # mirror first: x → size-1-x, then the rest
        m = m @ np.array([[-1.0, 0.0, size - 1], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    m[:, 2] += rng.uniform(-shift, shift, 2) * size
    return m


def _photo_quality(img: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    """Resolution, sharpness, lighting, noise and compression (float32 in, float32 0..255 out)."""
    import cv2

    size = CROP_SIZE
    if rng.random() < aug.lowres_prob:
        side = int(rng.integers(20, 45))
        small = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
    if rng.random() < aug.blur_prob:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.1))
    elif rng.random() < aug.sharpen_prob:
        soft = cv2.GaussianBlur(img, (0, 0), 1.0)
        img = img + rng.uniform(0.3, 1.0) * (img - soft)
    img = np.clip(img, 0.0, 255.0)
    if rng.random() < aug.gamma_prob:
        gamma = math.exp(rng.uniform(math.log(0.67), math.log(1.5)))
        img = 255.0 * (img / 255.0) ** gamma
    if rng.random() < aug.side_light_prob:
        theta = rng.uniform(0, 2 * math.pi)
        ramp = (np.cos(theta) * _GRID_X + np.sin(theta) * _GRID_Y) * rng.uniform(-40, 40)
        img = img + ramp
    if rng.random() < aug.noise_prob:
        img = img + rng.normal(0.0, rng.uniform(1.0, 6.0), img.shape).astype(np.float32)
    img = np.clip(img, 0.0, 255.0)
    if rng.random() < aug.jpeg_prob:
        quality = int(rng.integers(25, 91))
        ok, buf = cv2.imencode(".jpg", np.rint(img).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32)
    return img


_LINE = np.linspace(-0.5, 0.5, CROP_SIZE, dtype=np.float32)
_GRID_X, _GRID_Y = np.meshgrid(_LINE, _LINE)


def _contrast(img: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    """Contrast about the image's mean (as Keras' RandomContrast), and for photos brightness too."""
    spread = 0.3 if aug.kind == "photo" else 0.2
    mean = img.mean()
    img = (img - mean) * rng.uniform(1 - spread, 1 + spread) + mean
    if aug.kind == "photo":
        img = img + rng.uniform(-20, 20)
    return np.clip(img, 0.0, 255.0)


def _erase(img: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    """One rectangle (2–25 % of the area) of noise, with probability erase_prob."""
    if rng.random() >= aug.erase_prob:
        return img
    size = CROP_SIZE
    area = rng.uniform(0.02, 0.25) * size * size
    aspect = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
    h = int(min(size, max(1, round(math.sqrt(area * aspect)))))
    w = int(min(size, max(1, round(math.sqrt(area / aspect)))))
    y0, x0 = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
    img = img.copy()
    img[y0:y0 + h, x0:x0 + w] = rng.uniform(0.0, 255.0, (h, w))
    return img


def augment_batch(images: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    """(N, 48, 48) uint8 or float → (N, 48, 48, 1) float32 pixels in 0..255, each image augmented."""
    import cv2

    out = np.empty((len(images), CROP_SIZE, CROP_SIZE, 1), np.float32)
    for i, image in enumerate(images):
        img = np.asarray(image, np.float32)
        img = cv2.warpAffine(img, _affine(rng, aug), (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101)
        if aug.kind == "photo":
            img = _photo_quality(img, rng, aug)
        img = _contrast(img, rng, aug)
        out[i, :, :, 0] = _erase(img, rng, aug)
    return out


def batch_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one batch: the same (seed, epoch, index) gives the same augmentation."""
    return np.random.default_rng([seed, epoch, index])


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of N training images in EPOCH."""
    return np.random.default_rng([seed, epoch, 2**31]).permutation(n)
