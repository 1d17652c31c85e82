"""Where FER2013's faces have their eyes and mouth: the alignment template (run by hand).

    python -m benchmarks.fer_template [FER2013_DIR] [--n 2000] [--detector blazeface]

Runs the photo path's detector on N FER2013 training faces (a seeded sample over all classes),
each upscaled 4× to 192 px, and prints the median image-left eye, image-right eye and mouth in
48×48 coordinates (counted from the pixel edges), mirrored to be symmetric about the vertical
centre line. `facexpr/photo/align.py` keeps its output as FER_TEMPLATE.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from benchmarks.run import SHARED_DATA
from facexpr.core.labels import CROP_SIZE
from facexpr.photo.detectors import get_detector

UPSCALE = 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fer_template")
    parser.add_argument("data", nargs="?", default=str(SHARED_DATA / "fer2013"))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detector", default="blazeface")
    args = parser.parse_args(argv)


    files = sorted(Path(args.data, "train").glob("*/*.png"))
    rng = np.random.default_rng(args.seed)
    sample = [files[i] for i in rng.choice(len(files), size=min(args.n, len(files)), replace=False)]
    detector = get_detector(args.detector)
    points = []
    for path in sample:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        big = cv2.resize(gray, (CROP_SIZE * UPSCALE, CROP_SIZE * UPSCALE), interpolation=cv2.INTER_CUBIC)
        faces = [f for f in detector.find(big) if f.landmarks is not None]
        if not faces:
            continue
        face = max(faces, key=lambda f: f.box.w * f.box.h)
        lm = face.landmarks
        points.append(np.array([lm.eye_left, lm.eye_right, lm.mouth]) / UPSCALE)
    found = np.array(points)
    median = np.median(found, axis=0)
    # mirror: the eyes' mean height and their distance about the centre line; the mouth on it
    centre = CROP_SIZE / 2
    half = (median[1, 0] - median[0, 0]) / 2
    eye_y = (median[0, 1] + median[1, 1]) / 2
    template = [(round(centre - half, 1), round(eye_y, 1)), (round(centre + half, 1), round(eye_y, 1)),
                (round(centre, 1), round(float(median[2, 1]), 1))]
    share = round(len(found) / len(sample), 3)
    print(json.dumps({"faces": len(sample), "found": len(found), "found_share": share,
                      "median": np.round(median, 2).tolist(), "template": template,
                      "eye_distance_median": round(float(np.median(found[:, 1, 0] - found[:, 0, 0])), 2)},
                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
