"""The photo path on every development photo set, candidates side by side (run by hand).

    python -m benchmarks.photo_sets [--model MODEL.keras] [--json OUT] [--sweep]

For each set (headshots-dev, film-dev, web-dev) and each candidate crop (benchmarks/SELECTION.md,
issue 21's rule), one answer per photo — its largest face — scored against the set's label:
accuracy, faces the detector found, happy recall, and the detector + crop's milliseconds per photo.
A photo with no face found counts wrong; the whole image as one face is reported on its own line.
The group bootstrap of the rule (people, films) says whether a difference is beyond noise.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmarks.run import SHARED_DATA
from facexpr.core.labels import EXPRESSIONS, INDEX
from facexpr.photo.detectors import FoundFace
from facexpr.photo.faces import crop_face, cut, find_faces, resize_crop
from facexpr.photo.geometry import FER_TEMPLATE, HAAR_BOX, CropGeometry

SETS = ("headshots-dev", "film-dev", "web-dev")
BOOTSTRAPS = 2000


def _group(set_name: str, path: str) -> str:
    name = Path(path).stem
    if set_name == "headshots-dev":
        return name[1:4]  # KDEF: AF01ANS → F01, the person
    if set_name == "film-dev":
        return name.split("_")[0]  # the film's title
    return re.sub(r"_\d+$", "", name)  # web: the person's name


@dataclass
class Photo:
    gray: np.ndarray
    label: int
    group: str


def load_set(name: str) -> list[Photo]:
    root = SHARED_DATA / name
    with open(root / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    photos = []
    for row in rows:
        image = cv2.imread(str(root / row["path"]), cv2.IMREAD_GRAYSCALE)
        if image is not None:
            photos.append(Photo(image, INDEX[row["expression"]], _group(name, row["path"])))
    return photos


def _largest(faces: list[FoundFace]) -> FoundFace | None:
    return max(faces, key=lambda f: f.box.w * f.box.h) if faces else None


Cropper = Callable[[np.ndarray], np.ndarray | None]


def _with_fallback(geometry: CropGeometry, fallback: CropGeometry) -> Cropper:
    def crop(gray: np.ndarray) -> np.ndarray | None:
        face = _largest(find_faces(gray, geometry))
        if face is not None:
            return cut(gray, face, geometry)
        face = _largest(find_faces(gray, fallback))
        return None if face is None else cut(gray, face, fallback)
    return crop


class _Plain:
    """One geometry's crop of the largest face, timing the finder and the cut (warp) apart."""

    def __init__(self, geometry: CropGeometry) -> None:
        self.geometry, self.find_s, self.cut_s = geometry, 0.0, 0.0

    def __call__(self, gray: np.ndarray) -> np.ndarray | None:
        started = time.perf_counter()
        face = _largest(find_faces(gray, self.geometry))
        found = time.perf_counter()
        crop = None if face is None else cut(gray, face, self.geometry)
        self.find_s += found - started
        self.cut_s += time.perf_counter() - found
        return crop


def _haar_box_as_is(gray: np.ndarray) -> np.ndarray | None:
    face = _largest(find_faces(gray, HAAR_BOX))
    return None if face is None else crop_face(gray, face.box, 1.0, 0.0)


CANDIDATES: dict[str, Callable[[np.ndarray], np.ndarray | None]] = {
    "T": _Plain(HAAR_BOX),
    "T0": _haar_box_as_is,
    "M": _Plain(FER_TEMPLATE),
    "K": _Plain(CropGeometry(detector="blazeface-keypoints")),
    "MH": _with_fallback(FER_TEMPLATE, HAAR_BOX),
}


def run_candidate(crop: Callable, photos: list[Photo]) -> tuple[list[np.ndarray | None], float]:
    crop(photos[0].gray)  # load the detector before timing
    if isinstance(crop, _Plain):
        crop.find_s = crop.cut_s = 0.0
    started = time.perf_counter()
    crops = [crop(p.gray) for p in photos]
    return crops, (time.perf_counter() - started) * 1000 / len(photos)


def correct(classifier, crops: list[np.ndarray | None], labels: np.ndarray) -> np.ndarray:
    found = [i for i, c in enumerate(crops) if c is not None]
    pred = np.full(len(crops), -1)
    if found:
        pred[found] = classifier.predict(np.stack([crops[i] for i in found])).argmax(1)
    return pred == labels, pred


def bootstrap(diff_by_set: dict[str, tuple[np.ndarray, list[str]]], seed: int = 0) -> tuple[float, float]:
    """95 % interval of the pooled mean of DIFF (per photo), resampling groups within each set."""
    rng = np.random.default_rng(seed)
    prepared = []
    for diff, groups in diff_by_set.values():
        names = sorted(set(groups))
        index = {g: i for i, g in enumerate(names)}
        gid = np.array([index[g] for g in groups])
        sums = np.bincount(gid, weights=diff, minlength=len(names))
        counts = np.bincount(gid, minlength=len(names))
        prepared.append((sums, counts))
    means = []
    for _ in range(BOOTSTRAPS):
        total, n = 0.0, 0
        for sums, counts in prepared:
            pick = rng.integers(0, len(sums), len(sums))
            total += sums[pick].sum()
            n += counts[pick].sum()
        means.append(total / n)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def set_difference(diff: np.ndarray, groups: list[str]) -> dict:
    """One set's paired difference (per photo) with its 95 % group-bootstrap interval."""
    lo, hi = bootstrap({"set": (diff, groups)})
    return {"diff": round(float(diff.mean()), 4), "ci95": [round(lo, 4), round(hi, 4)],
            "loses_beyond_noise": hi < 0}


def report_results(results: dict, json_path: str | None) -> None:
    """Print RESULTS as JSON, and write them to JSON_PATH when given."""
    text = json.dumps(results, indent=1)
    print(text)
    if json_path:
        Path(json_path).write_text(text + "\n")


def main(argv: list[str] | None = None) -> int:
    from facexpr.model.classifier import load_classifier, newest_model

    parser = argparse.ArgumentParser(prog="python -m benchmarks.photo_sets")
    parser.add_argument("--model", default=None, help="default: the served model (newest card in models/)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--candidates", default=",".join(CANDIDATES),
                        help=f"comma-separated, of {', '.join(CANDIDATES)} and served (the card's crop)")
    parser.add_argument("--headshots-baseline", default="T",
                        help="baseline on headshots-dev (rule 3b: T0, the box without its fitted framing)")
    parser.add_argument("--scales", default="", help="also M at these template scales, e.g. 0.9,1.1")
    args = parser.parse_args(argv)
    classifier = load_classifier(args.model or newest_model())
    names = args.candidates.split(",")
    # "served": the crop the model's own card asks for (make bench's "after")
    candidates = {n: _Plain(classifier.geometry) if n == "served" else CANDIDATES[n] for n in names}
    for scale in filter(None, args.scales.split(",")):
        candidates[f"M@{float(scale):.2f}"] = _Plain(CropGeometry(template_scale=float(scale)))
    sets = {name: load_set(name) for name in SETS}
    results: dict = {"model": classifier.version, "detector_warmup": True, "sets": {}, "rule": {}}
    hits: dict[str, dict[str, np.ndarray]] = {c: {} for c in candidates}
    for set_name, photos in sets.items():
        labels = np.array([p.label for p in photos])
        groups = [p.group for p in photos]
        whole = [resize_crop(p.gray) for p in photos]
        whole_ok, _ = correct(classifier, whole, labels)
        out = {"n": len(photos), "groups": len(set(groups)),
               "whole_image_as_one_face": round(float(whole_ok.mean()), 4), "candidates": {}}
        for name, crop in candidates.items():
            crops, ms = run_candidate(crop, photos)
            ok, pred = correct(classifier, crops, labels)
            # the whole-image fallback where nothing was found: its own line
            fallback = np.where([c is None for c in crops], whole_ok, ok)
            happy = labels == INDEX["happy"]
            recall = {e: round(float((pred[labels == i] == i).mean()), 3) if (labels == i).any() else None
                      for i, e in enumerate(EXPRESSIONS)}
            out["candidates"][name] = {
                "accuracy": round(float(ok.mean()), 4), "faces_found": int(sum(c is not None for c in crops)),
                "happy_recall": round(float((pred[happy] == INDEX["happy"]).mean()), 3),
                "ms_per_photo": round(ms, 2), "with_whole_image_fallback": round(float(fallback.mean()), 4),
                "recall": recall}
            if isinstance(crop, _Plain):
                out["candidates"][name].update({"find_ms": round(crop.find_s * 1000 / len(photos), 2),
                                                "cut_ms": round(crop.cut_s * 1000 / len(photos), 2)})
            hits[name][set_name] = ok.astype(float)
            print(set_name, name, out["candidates"][name], flush=True)
        results["sets"][set_name] = out
    groups_by_set = {s: [p.group for p in sets[s]] for s in SETS}
    baselines = {s: "T" for s in SETS}
    if args.headshots_baseline in hits:  # rule 3b: the framing fitted to headshots-dev is in-sample there
        baselines["headshots-dev"] = args.headshots_baseline
    total = sum(len(groups_by_set[s]) for s in SETS)
    for name in candidates:
        pooled_acc = sum(hits[name][s].sum() for s in SETS) / total
        entry: dict = {"pooled_accuracy": round(float(pooled_acc), 4),
                       "mean_of_sets": round(float(np.mean([hits[name][s].mean() for s in SETS])), 4)}
        if name not in ("T", args.headshots_baseline):
            per_set = {s: {"baseline": baselines[s],
                           **set_difference(hits[name][s] - hits[baselines[s]][s], groups_by_set[s])}
                       for s in SETS}
            lo, hi = bootstrap({s: (hits[name][s] - hits["T"][s], groups_by_set[s]) for s in SETS})
            entry.update({"pooled_diff_vs_T_ci95": [round(lo, 4), round(hi, 4)], "gains_pooled": lo > 0,
                          "sets": per_set,
                          "passes": lo > 0 and not any(v["loses_beyond_noise"] for v in per_set.values())})
        results["rule"][name] = entry
    if "M" in hits and "MH" in hits:
        lo, hi = bootstrap({s: (hits["MH"][s] - hits["M"][s], groups_by_set[s]) for s in SETS})
        results["rule"]["MH_over_M"] = {"ci95": [round(lo, 4), round(hi, 4)], "keep_fallback": lo > 0}
    report_results(results, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
