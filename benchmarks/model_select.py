"""Rule 4 of benchmarks/SELECTION.md (issue 23): may a candidate model replace the served default?

    nice -n 19 .venv/bin/python -m benchmarks.model_select --baseline models/fer-vgg-v1.keras \
        --candidate models/fer-vgg-v5.keras [--candidate …] [--json OUT]

Every development photo set (headshots-dev, film-dev, web-dev) through the served photo path: the
largest face each model's card asks for, found and cut once (the candidates must cut faces the way
the baseline does), flip-averaged, float32; a photo with no face found counts wrong. Then, per
candidate: its paired difference with the baseline pooled over every photo and per set, each with
its 95 % group bootstrap (people, films; benchmarks.photo_sets.bootstrap), per-class recall on the
pooled photos, sad precision per set, and FER2013 val (accuracy and per-class report). The rule's
four conditions are evaluated and printed with the figures.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.photo_sets import (
    SETS,
    _Plain,
    bootstrap,
    correct,
    load_set,
    report_results,
    run_candidate,
    set_difference,
)
from benchmarks.run import SHARED_DATA
from facexpr.core.labels import EXPRESSIONS, INDEX

VAL_TOLERANCE = 0.005  # condition 3: val ≥ baseline − this
RECALL_TOLERANCE = 0.10  # condition 4: no class's pooled recall below baseline's − this
UNSURE_BELOW = 0.5  # fer-vgg-v1's card threshold, reported for each model


def recall(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    return {e: round(float((predicted[labels == i] == i).mean()), 4) if (labels == i).any() else None
            for i, e in enumerate(EXPRESSIONS)}


def sad_precision(predicted: np.ndarray, labels: np.ndarray) -> float | None:
    said = predicted == INDEX["sad"]
    return round(float((labels[said] == INDEX["sad"]).mean()), 4) if said.any() else None


def val_figures(classifier, val) -> dict:
    from facexpr.learn.evaluate import report

    figures = report(val.labels, classifier.predict(val.images).argmax(1))
    return {k: figures[k] for k in ("n", "accuracy", "macro_f1", "per_class", "confusion")}


def main(argv: list[str] | None = None) -> int:
    from facexpr.learn.data import load_layout
    from facexpr.model.classifier import load_classifier

    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_select")
    parser.add_argument("--baseline", default="models/fer-vgg-v1.keras")
    parser.add_argument("--candidate", action="append", required=True)
    parser.add_argument("--fer2013", default=str(SHARED_DATA / "fer2013"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    baseline = load_classifier(args.baseline)
    candidates = [load_classifier(path) for path in args.candidate]
    for model in candidates:
        if model.geometry != baseline.geometry:
            raise SystemExit(f"{model.version} cuts faces as {model.geometry}, the baseline as "
                             f"{baseline.geometry}: add its card's crop section first (rule 4).")
    val = load_layout(args.fer2013.rstrip("/") + "/val")
    sets = {name: load_set(name) for name in SETS}
    crops = {name: run_candidate(_Plain(baseline.geometry), photos)[0] for name, photos in sets.items()}
    labels = {name: np.array([p.label for p in photos]) for name, photos in sets.items()}
    groups = {name: [p.group for p in photos] for name, photos in sets.items()}
    pooled_labels = np.concatenate([labels[s] for s in SETS])

    def scored(model) -> dict:
        per_set, hits, predicted = {}, {}, {}
        for s in SETS:
            ok, pred = correct(model, crops[s], labels[s])
            hits[s], predicted[s] = ok.astype(float), pred
            per_set[s] = {"n": len(ok), "accuracy": round(float(ok.mean()), 4),
                          "sad_precision": sad_precision(pred, labels[s]), "recall": recall(labels[s], pred)}
        pooled = np.concatenate([predicted[s] for s in SETS])
        # How often an answer under UNSURE_BELOW confidence is right (the card's `unsure` threshold).
        found = [c for s in SETS for c in crops[s] if c is not None]
        confidence = model.predict(np.stack(found)).max(1)
        right = np.concatenate([hits[s][[c is not None for c in crops[s]]] for s in SETS]).astype(bool)
        low = confidence < UNSURE_BELOW
        return {"model": model.version, "sets": per_set,
                "pooled": {"n": len(pooled), "accuracy": round(float((pooled == pooled_labels).mean()), 4),
                           "recall": recall(pooled_labels, pooled),
                           "unsure": {"below": UNSURE_BELOW, "share_of_faces": round(float(low.mean()), 4),
                                      "right_when_unsure": round(float(right[low].mean()), 4),
                                      "right_when_sure": round(float(right[~low].mean()), 4)}},
                "val": val_figures(model, val), "_hits": hits}

    base = scored(baseline)
    results = {"baseline": {k: v for k, v in base.items() if k != "_hits"}, "candidates": {}}
    for model in candidates:
        mine = scored(model)
        diffs = {s: (mine["_hits"][s] - base["_hits"][s], groups[s]) for s in SETS}
        lo, hi = bootstrap(diffs)
        per_set = {s: set_difference(*diffs[s]) for s in SETS}
        pooled_diff = float(np.concatenate([d for d, _ in diffs.values()]).mean())
        recall_drops = {e: round(mine["pooled"]["recall"][e] - base["pooled"]["recall"][e], 4)
                        for e in EXPRESSIONS if base["pooled"]["recall"][e] is not None}
        conditions = {
            "1_pooled_gain_beyond_noise": lo > 0,
            "2_no_set_lost_beyond_noise": not any(v["loses_beyond_noise"] for v in per_set.values()),
            "3_val_kept": mine["val"]["accuracy"] >= base["val"]["accuracy"] - VAL_TOLERANCE,
            "4_no_class_recall_falls_10_points": min(recall_drops.values()) >= -RECALL_TOLERANCE,
        }
        results["candidates"][model.version] = {
            **{k: v for k, v in mine.items() if k != "_hits"},
            "vs_baseline": {"pooled_diff": round(pooled_diff, 4),
                            "pooled_ci95": [round(lo, 4), round(hi, 4)], "sets": per_set,
                            "pooled_recall_change": recall_drops},
            "conditions": conditions, "passes": all(conditions.values())}
    report_results(results, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
