"""How the crop made from a photo moves accuracy, per model, side by side (run by hand).

    python -m benchmarks.photo_crops ../shared/data/headshots-dev models/fer-vgg-v1.keras OTHER.keras …

Faces are detected once per photo; each variant then changes only the crop (its framing, or a
degradation that makes it look more like a web-scraped FER2013 image) before every model sees
the same crops. Prints accuracy and how many photos each model calls "sad", the class the
FER-fitted models over-predict on photos (README, The shipped model).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from facexpr.core.labels import INDEX
from facexpr.core.types import Box
from facexpr.model.classifier import load_classifier
from facexpr.photo.detectors.haar import haar_boxes as detect_faces  # these sweeps are of the Haar box
from facexpr.photo.faces import crop_face
from facexpr.photo.imaging import decode_gray


def _jpeg(crop: np.ndarray, quality: int = 40) -> np.ndarray:
    _, buffer = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buffer, cv2.IMREAD_GRAYSCALE)


Variant = Callable[[np.ndarray, Box], np.ndarray]
VARIANTS: dict[str, Variant] = {
    "as served": lambda gray, box: crop_face(gray, box),
    "box as is": lambda gray, box: crop_face(gray, box, 1.0, 0.0),
    "box 0.9×": lambda gray, box: crop_face(gray, box, 0.9, 0.0),
    "box 1.1×": lambda gray, box: crop_face(gray, box, 1.1, 0.0),
    "box 1.2×": lambda gray, box: crop_face(gray, box, 1.2, 0.0),
    "blur σ0.8": lambda gray, box: cv2.GaussianBlur(crop_face(gray, box), (0, 0), 0.8),
    "equalised": lambda gray, box: cv2.equalizeHist(crop_face(gray, box)),
    "JPEG q40": lambda gray, box: _jpeg(crop_face(gray, box)),
}


def labelled_photos(root: Path) -> Iterator[tuple[np.ndarray, Box, int]]:
    """(gray photo, its largest face, label) for each ROOT/<expression>/<photo> with a face."""
    for path in sorted(root.glob("*/*")):
        if path.parent.name not in INDEX:
            continue
        gray = decode_gray(path.read_bytes())
        boxes = detect_faces(gray)
        if boxes:
            yield gray, boxes[0], INDEX[path.parent.name]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    photos = list(labelled_photos(Path(argv[0])))
    labels = np.array([label for _, _, label in photos])
    models = {Path(p).stem: load_classifier(Path(p)) for p in argv[1:]}
    sad = (labels == INDEX["sad"]).sum()
    print(f"{len(photos)} photos with a face; accuracy (photos called sad, of {sad} that are)")
    print(f"{'crop':14s}" + "".join(f"{name:>22s}" for name in models))
    for variant, make in VARIANTS.items():
        crops = np.stack([make(gray, box) for gray, box, _ in photos])
        cells = []
        for classifier in models.values():
            answers = classifier.predict(crops).argmax(1)
            cells.append(f"{(answers == labels).mean():.3f} ({(answers == INDEX['sad']).sum():2d})")
        print(f"{variant:14s}" + "".join(f"{cell:>22s}" for cell in cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
