"""FER2013's faces cut the way photos are: each 48×48 face through the photo path's alignment.

FER2013's faces were framed by their source's detector, so their eyes and mouth wander around
the template a photo's face is warped onto (facexpr.photo.align). For training, each face is
upscaled 4× (as benchmarks/fer_template.py did to find the template), BlazeFace and the face mesh
find its eyes and mouth, and the face is warped onto the template like a photo's. Where no face is
found (about 1 in 200) the original stays. A share of each batch (the recipe's `aligned_share`)
then trains on these copies, the rest on the originals, so the net learns both framings: photos
arrive aligned, FER2013's own crops as they are.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facexpr.core.errors import DataError
from facexpr.core.labels import CROP_SIZE
from facexpr.learn.data import Dataset
from facexpr.photo.align import align_face
from facexpr.photo.detectors import get_detector

UPSCALE = 4


def aligned_copies(images: np.ndarray, progress_every: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(aligned, found): each (N, 48, 48) uint8 face warped onto the FER2013 template where the
    detector found its landmarks (found[i]), else itself."""
    detector = get_detector("blazeface")
    side = CROP_SIZE * UPSCALE
    aligned = images.copy()
    found = np.zeros(len(images), bool)
    for i, face in enumerate(images):
        big = np.asarray(Image.fromarray(face).resize((side, side), Image.Resampling.BICUBIC))
        faces = [f for f in detector.find(big) if f.landmarks is not None]
        if faces:
            largest = max(faces, key=lambda f: f.box.w * f.box.h)
            aligned[i] = align_face(big, largest.landmarks)
            found[i] = True
        if progress_every and (i + 1) % progress_every == 0:
            print(f"aligned {i + 1:,} of {len(images):,} faces ({found[:i + 1].mean():.1%} found)",
                  flush=True)
    return aligned, found


def cached_aligned_copies(images: np.ndarray, cache: str | None) -> tuple[np.ndarray, np.ndarray]:
    """`aligned_copies`, kept in CACHE (.npz) and reused while the images are the same ones."""
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()
    if cache and Path(cache).exists():
        with np.load(cache) as saved:
            if str(saved["digest"]) == digest:
                return saved["aligned"], saved["found"]
    aligned, found = aligned_copies(images, progress_every=5000)
    if cache:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, aligned=aligned, found=found, digest=digest)
    return aligned, found


def training_copies(train: Dataset, relabeled: Dataset, share: float, cache_dir: Path
                    ) -> tuple[np.ndarray, dict[str, Any]]:
    """The aligned copy of every training image (FER2013's aligned, the corrections as they are:
    photo crops already) and what the card records of it."""
    if not 0.0 < share <= 1.0:
        raise DataError(f"The aligned share of a batch must be above 0 and at most 1, not {share}.")
    copies, found = cached_aligned_copies(train.images, str(Path(cache_dir) / "aligned.npz"))
    return (np.concatenate([copies, relabeled.images]),
            {"share": share, "found": int(found.sum()), "of": len(found)})
