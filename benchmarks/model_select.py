"""Rule 4 of benchmarks/SELECTION.md (issue 23): may a candidate model replace the served default?

    nice -n 19 .venv/bin/python -m benchmarks.model_select [--baseline SERVED.keras] \
        --candidate NEW.keras [--candidate …] [--json OUT] [--write-card]

Every development photo set (headshots-dev, film-dev, web-dev) through the served photo path: the
largest face each model's card asks for, found and cut once (the candidates must cut faces the way
the baseline does), flip-averaged, float32; a photo with no face found counts wrong. Then, per
candidate: its paired difference with the baseline pooled over every photo and per set, each with
its 95 % group bootstrap (people, films; benchmarks.photo_sets.bootstrap), per-class recall on the
pooled photos, sad precision per set, and FER2013 val (accuracy and per-class report). The rule's
four conditions are evaluated and printed with the figures.

With --write-card, the passing candidate with the highest pooled accuracy among those that cost one
model call per face, as the baseline does (an average of several nets is scored, never chosen),
gets three card sections (the issue's "every development set's figures, the selection rule and the
runners-up"): `photos` (per set and pooled, before/after), `unsure` (its own threshold, from the
same photos) and `selection` (the rule, its conditions, every other model of the run as a runner-up).
"""

from __future__ import annotations

import argparse
from datetime import date

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

# Condition 3: val ≥ the baseline's − this, the baseline's val being the higher of its card's (Keras, what
# rule 4's text quotes: v1's 0.6537) and the one measured here (through its .tflite: v1's 0.6528).
VAL_TOLERANCE = 0.005
RECALL_TOLERANCE = 0.10  # condition 4: no class's pooled recall below baseline's − this
UNSURE_BELOW = 0.5  # fer-vgg-v1's card threshold, reported for each model
RULE = "benchmarks/SELECTION.md, rule 4"


def recall(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    return {e: round(float((predicted[labels == i] == i).mean()), 4) if (labels == i).any() else None
            for i, e in enumerate(EXPRESSIONS)}


def sad_precision(predicted: np.ndarray, labels: np.ndarray) -> float | None:
    said = predicted == INDEX["sad"]
    return round(float((labels[said] == INDEX["sad"]).mean()), 4) if said.any() else None


def unsure_threshold(confidence: np.ndarray, right: np.ndarray, top2: np.ndarray | None = None) -> dict:
    """The card's `unsure` section: the lowest 0.1 confidence edge from which every bin's answers are
    right more often than not (how fer-vgg-v1's 0.5 was set), with the figures either side of it."""
    bins = np.minimum((confidence * 10).astype(int), 9)
    hit_rate = {b: float(right[bins == b].mean()) for b in range(10) if (bins == b).any()}
    edge = min((b for b in hit_rate if all(r >= 0.5 for k, r in hit_rate.items() if k >= b)), default=9)
    below = bins < edge
    return {"below": edge / 10,
            "how": "by confidence bins of 0.1, answers are right less often than not below it and more often "
                   "from it up: " + ", ".join(f"{b / 10:.1f}-{(b + 1) / 10:.1f}: {r:.3f}"
                                              for b, r in sorted(hit_rate.items())),
            "accuracy_below": round(float(right[below].mean()), 4) if below.any() else None,
            "accuracy_at_or_above": round(float(right[~below].mean()), 4) if (~below).any() else None,
            "n_below": int(below.sum()), "n_at_or_above": int((~below).sum()),
            **({"top2_accuracy_below": round(float(top2[below].mean()), 4) if below.any() else None}
               if top2 is not None else {})}


def card_sections(results: dict, chosen: str, measured: str) -> dict[str, dict]:
    """The `photos`, `unsure` and `selection` sections for CHOSEN's card, from one run's RESULTS."""
    mine, base = results["candidates"][chosen], results["baseline"]
    path = "the served photo path (largest face, the card's crop), flip-averaged float32; no face = wrong"
    photos = {"measured": measured, "path": path, "before": base["model"],
              "sets": {s: {**mine["sets"][s], "before": base["sets"][s]["accuracy"],
                           "change": mine["vs_baseline"]["sets"][s]} for s in SETS},
              "pooled": {**{k: v for k, v in mine["pooled"].items() if k != "unsure"},
                         "before": base["pooled"]["accuracy"], "change": mine["vs_baseline"]["pooled_diff"],
                         "change_ci95": mine["vs_baseline"]["pooled_ci95"],
                         "recall_before": base["pooled"]["recall"]}}
    others = {base["model"]: base, **{v: c for v, c in results["candidates"].items() if v != chosen}}
    runners_up = [{"model": v, "role": "runner-up" if "conditions" in r else "baseline",
                   "pooled": r["pooled"]["accuracy"], "val": r["val"]["accuracy"],
                   **{s: r["sets"][s]["accuracy"] for s in SETS},
                   "failed": [k for k, ok in r.get("conditions", {}).items() if not ok]}
                  for v, r in others.items()]
    selection = {"rule": RULE, "baseline": base["model"], "conditions": mine["conditions"],
                 "runners_up": runners_up}
    return {"photos": photos, "unsure": {**mine["unsure_threshold"], "measured": measured},
            "selection": selection}


def model_calls(card) -> int:
    """Model calls per face: one, or one per member of an average (its card's `data.members`)."""
    return len(card.data.get("members") or ()) or 1


def val_figures(classifier, val) -> dict:
    from facexpr.learn.evaluate import report

    figures = report(val.labels, classifier.predict(val.images).argmax(1))
    return {k: figures[k] for k in ("n", "accuracy", "macro_f1", "per_class", "confusion")}


def main(argv: list[str] | None = None) -> int:
    from facexpr.learn.data import load_layout
    from facexpr.model.classifier import add_to_card, load_classifier, newest_model

    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_select")
    parser.add_argument("--baseline", default=None, help="default: the served model (newest card in models/)")
    parser.add_argument("--candidate", action="append", required=True)
    parser.add_argument("--fer2013", default=str(SHARED_DATA / "fer2013"))
    parser.add_argument("--json", default=None)
    parser.add_argument("--write-card", action="store_true",
                        help="write the chosen candidate's photos / unsure / selection card sections")
    args = parser.parse_args(argv)

    baseline = load_classifier(args.baseline or newest_model())
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
        found = {s: np.array([c is not None for c in crops[s]]) for s in SETS}
        probabilities = model.predict(np.stack([c for s in SETS for c in crops[s] if c is not None]))
        confidence = probabilities.max(1)
        right = np.concatenate([hits[s][found[s]] for s in SETS]).astype(bool)
        low = confidence < UNSURE_BELOW
        found_labels = np.concatenate([labels[s][found[s]] for s in SETS])
        top2 = (np.argsort(-probabilities, axis=1)[:, :2] == found_labels[:, None]).any(1)
        return {"model": model.version, "sets": per_set,
                "pooled": {"n": len(pooled), "accuracy": round(float((pooled == pooled_labels).mean()), 4),
                           "recall": recall(pooled_labels, pooled),
                           "unsure": {"below": UNSURE_BELOW, "share_of_faces": round(float(low.mean()), 4),
                                      "right_when_unsure": round(float(right[low].mean()), 4),
                                      "right_when_sure": round(float(right[~low].mean()), 4)}},
                "unsure_threshold": unsure_threshold(confidence, right, top2),
                "val": val_figures(model, val), "_hits": hits}

    base = scored(baseline)
    base_val = max(base["val"]["accuracy"], baseline.card.val.accuracy or 0.0)
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
            "3_val_kept": mine["val"]["accuracy"] >= base_val - VAL_TOLERANCE,
            "4_no_class_recall_falls_10_points": min(recall_drops.values()) >= -RECALL_TOLERANCE,
        }
        results["candidates"][model.version] = {
            **{k: v for k, v in mine.items() if k != "_hits"},
            "vs_baseline": {"pooled_diff": round(pooled_diff, 4),
                            "pooled_ci95": [round(lo, 4), round(hi, 4)], "sets": per_set,
                            "pooled_recall_change": recall_drops},
            "conditions": conditions, "passes": all(conditions.values())}
    report_results(results, args.json)
    if args.write_card:
        # An average of several nets (benchmarks/ensemble.py) is scored, as a teacher, but never chosen:
        # it costs a model call per member, and issue 24's one-face target (1.5 ms) holds one.
        served_alike = {m.version for m in candidates if model_calls(m.card) <= model_calls(baseline.card)}
        passing = [v for v, r in results["candidates"].items() if r["passes"] and v in served_alike]
        if not passing:
            print(f"No candidate that serves at the baseline's cost passes {RULE}: no card written.")
            return 0
        # Every one left is one net of one input, so "cheaper to serve" never breaks the tie.
        chosen = max(passing, key=lambda v: results["candidates"][v]["pooled"]["accuracy"])
        path = next(m.path for m in candidates if m.version == chosen)
        measured = f"{date.today().isoformat()}, {chosen} vs {baseline.version}, {RULE}"
        for section, figures in card_sections(results, chosen, measured).items():
            add_to_card(path, section, figures)
        print(f"{chosen} passes {RULE}: its card ({path}) now has photos, unsure and selection sections.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
