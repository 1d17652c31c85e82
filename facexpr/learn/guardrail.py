"""The guardrail: whether a retrained model may be served, by a rule fixed before it is scored.

Served only if it gains beyond noise on the corrections (cross-fitted: each scored by a fine-tune
that never saw it) or on a labelled photo folder — a one-sided exact sign test on the faces whose
answer changed (McNemar), p < GAIN_P_VALUE — and loses at most MAX_VAL_LOSS of FER2013 val accuracy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from facexpr.learn.data import Dataset
from facexpr.learn.evaluate import report
from facexpr.model.classifier import Classifier

MAX_VAL_LOSS = 0.01  # FER2013 val accuracy may fall by at most 1 point
GAIN_P_VALUE = 0.05  # one-sided exact sign test on the faces whose answer changed
EVIDENCE = {"corrections": "corrections (cross-fitted)", "photos": "photos"}


def score(classifier: Classifier, data: Dataset) -> tuple[dict[str, Any], np.ndarray]:
    """(report, per-image correctness) of CLASSIFIER on DATA's crops."""
    predicted = classifier.predict(data.images).argmax(1) if len(data) else np.zeros(0, np.int64)
    return report(data.labels, predicted), predicted == data.labels


def sign_test(gained: int, lost: int) -> float:
    """One-sided exact p-value that GAINED ≥ observed if gains and losses were equally likely."""
    n = gained + lost
    if n == 0:
        return 1.0
    return sum(math.comb(n, i) for i in range(gained, n + 1)) / 2**n


def fewest_changes_to_pass() -> int:
    """The fewest changed answers that can pass the sign test (all of them gains): 5 at p < 0.05."""
    n = 1
    while sign_test(n, 0) >= GAIN_P_VALUE:
        n += 1
    return n


def cannot_pass(corrections: int, photo_folder: bool) -> str | None:
    """Why a retrain on CORRECTIONS corrections cannot pass whatever it learns, or None when it can.

    Cross-fitting needs two units to split, and the sign test needs at least `fewest_changes_to_pass`
    answers that change; a labelled photo folder is evidence of its own."""
    needed = fewest_changes_to_pass()
    if photo_folder or corrections >= needed:
        return None
    plural = "s" if corrections != 1 else ""
    return (f"With {corrections} correction{plural} the guardrail cannot pass: a gain "
            f"counts only once at least {needed} answers change for the better and none for the worse "
            f"(one-sided sign test, p < {GAIN_P_VALUE}). Confirm or correct at least "
            f"{needed - corrections} more, or set a labelled photo folder (FACEXPR_PHOTOS_VAL) to test on.")


def paired(before: np.ndarray, after: np.ndarray) -> dict[str, Any]:
    """Before/after accuracy on the same faces, with the changed answers and their sign test."""
    gained, lost = int((~before & after).sum()), int((before & ~after).sum())
    n = len(before)
    return {"n": n, "before": round(float(before.mean()), 4) if n else None,
            "after": round(float(after.mean()), 4) if n else None,
            "gained": gained, "lost": lost, "p_value": round(sign_test(gained, lost), 4)}


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str
    rules: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(val: dict[str, Any], corrections: dict[str, Any] | None, photos: dict[str, Any] | None) -> Verdict:
    """Served only if (the cross-fitted corrections or the photos gain with p < 0.05) and val falls
    ≤ 1 point."""
    rules = []
    for key, figures in (("corrections", corrections), ("photos", photos)):
        name = EVIDENCE[key]
        if not figures or not figures["n"]:
            rules.append({"rule": f"gain on {name}", "passed": False, "why": "no faces to test on"})
            continue
        ok = figures["gained"] > figures["lost"] and figures["p_value"] < GAIN_P_VALUE
        rules.append({"rule": f"gain on {name}", "passed": ok,
                      "why": f"{figures['before']:.3f} → {figures['after']:.3f} on {figures['n']} faces; "
                             f"{figures['gained']} gained, {figures['lost']} lost, one-sided sign test "
                             f"p = {figures['p_value']:.3f} ({'<' if ok else 'not <'} {GAIN_P_VALUE})"})
    drop = val["before"] - val["after"]
    val_ok = drop <= MAX_VAL_LOSS + 1e-9
    rules.append({"rule": "FER2013 val loses ≤ 1 point", "passed": val_ok,
                  "why": f"{val['before']:.4f} → {val['after']:.4f} ({-drop * 100:+.1f} points)"})
    gain_ok = rules[0]["passed"] or rules[1]["passed"]
    passed = gain_ok and val_ok
    if passed:
        gains = " and ".join(r["rule"].removeprefix("gain on ") for r in rules[:2] if r["passed"])
        reason = f"gains beyond noise on {gains} and keeps FER2013 val"
    elif not gain_ok:
        reason = "no gain beyond noise on the corrections or the photos"
        reason += "" if val_ok else "; and FER2013 val falls by more than 1 point"
    else:
        reason = "FER2013 val falls by more than 1 point"
    return Verdict(passed, reason, rules)
