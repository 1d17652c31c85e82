"""Model health in totals: what the HTTP API's /v1/health/summary returns, in plain Python.

The Health page reshapes the history's aggregate rows into pandas frames for its charts
(`facexpr.serve.health`, which needs the `app` extra); the API needs only totals per window, per
model version, per stage and per class, so a lean install (`pip install facexpr`, no pandas)
answers it too. Both read the same aggregate queries and share the window and percentile rules
defined here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from facexpr.core.labels import EXPRESSIONS
from facexpr.core.times import utc
from facexpr.storage.history import CONFIDENCE_BINS, LOW_CONFIDENCE, STAGES, History, latency_bin_value

WINDOWS: dict[str, timedelta | None] = {
    "Last 24 hours": timedelta(hours=24),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
    "All time": None,
}
DEFAULT_WINDOW = "Last 7 days"
PERCENTILES = (0.50, 0.95)
LOW_BIN = round(LOW_CONFIDENCE * CONFIDENCE_BINS)  # bins below this one hold confidence < 0.5


def window_bounds(window: str, now: datetime | None = None) -> tuple[datetime | None, datetime | None]:
    """(start, end) of a named window. The end stays open ("until now"), so a record made while
    the page loads still counts; "All time" has no start either."""
    if window not in WINDOWS:
        raise ValueError(f"Unknown window {window!r}: choose one of {', '.join(WINDOWS)}.")
    span = WINDOWS[window]
    return ((utc(now) or datetime.now(UTC)) - span if span else None), None


def nearest_rank(bins: Iterable[tuple[int, int]], q: float) -> float | None:
    """Nearest-rank percentile Q from (latency bin, n) pairs: the centre of the bin holding rank
    ⌈q·N⌉ (None when there is nothing)."""
    ordered = sorted((int(b), int(n)) for b, n in bins)
    total = sum(n for _, n in ordered)
    if total == 0:
        return None
    rank, seen = max(1, math.ceil(q * total)), 0
    for b, n in ordered:
        seen += n
        if seen >= rank:
            return latency_bin_value(b)
    return None  # unreachable: seen reaches total ≥ rank


def share(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


@dataclass(frozen=True)
class StageLatency:
    p50_ms: float | None
    p95_ms: float | None
    n: int


@dataclass(frozen=True)
class VersionHealth:
    model_version: str
    predictions: int
    mean_confidence: float | None
    answered: int
    agreement: float | None


@dataclass
class _Counts:
    """One model version's sums over the window (or every version's, added up)."""

    predictions: int = 0
    confidence_sum: float = 0.0
    answered: int = 0
    confirmed: int = 0

    @staticmethod
    def sum(parts: Iterable[_Counts]) -> _Counts:
        total = _Counts()
        for part in parts:
            total.predictions += part.predictions
            total.confidence_sum += part.confidence_sum
            total.answered += part.answered
            total.confirmed += part.confirmed
        return total


@dataclass(frozen=True)
class HealthSummary:
    """One window's totals (faces predicted, people's answers, confidence, latency, per version)."""

    start: datetime | None
    total: int
    answered: int
    confirmed: int
    mean_confidence: float | None
    low_confidence_share: float | None
    expressions: dict[str, int]  # predictions per expression, all seven
    latency: dict[str, StageLatency]  # per stage of the photo path
    models: list[VersionHealth]  # most predictions first
    relabels: dict[str, int]  # faces relabeled per label since SINCE (every source), all seven

    @property
    def corrected(self) -> int:
        return self.answered - self.confirmed

    @property
    def agreement(self) -> float | None:
        return share(self.confirmed, self.answered)


def health_summary(history: History, start: datetime | None, end: datetime | None = None,
                   since: datetime | None = None) -> HealthSummary:
    """The totals for predictions made in [START, END) (None = open); relabels counted from SINCE.

    Raises HistoryUnavailable when the database cannot be reached.
    """
    expressions = dict.fromkeys(EXPRESSIONS, 0)
    per_version: dict[str, _Counts] = defaultdict(_Counts)
    low = 0
    for _day, version, expression, b, n, conf in history.confidence_cube(start, end, None):
        low += n if b < LOW_BIN else 0
        expressions[expression] = expressions.get(expression, 0) + n
        per_version[str(version)].predictions += n
        per_version[str(version)].confidence_sum += conf
    for _day, version, _predicted, _label, was_confirmed, n in history.feedback_counts(start, end, None):
        per_version[str(version)].answered += n
        per_version[str(version)].confirmed += n if was_confirmed else 0
    every = _Counts.sum(per_version.values())
    by_stage: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for stage, b, n in history.latency_bins(start, end, None):
        by_stage[stage].append((b, n))
    relabels = dict.fromkeys(EXPRESSIONS, 0)
    for label, _confirmed, n in history.relabel_counts(since):
        relabels[label] = relabels.get(label, 0) + n
    models = [VersionHealth(version, c.predictions, share(c.confidence_sum, c.predictions), c.answered,
                            share(c.confirmed, c.answered)) for version, c in per_version.items()]
    return HealthSummary(
        start=utc(start), total=every.predictions, answered=every.answered, confirmed=every.confirmed,
        mean_confidence=share(every.confidence_sum, every.predictions),
        low_confidence_share=share(low, every.predictions),
        expressions=expressions,
        latency={stage: StageLatency(*(nearest_rank(by_stage[stage], q) for q in PERCENTILES),
                                     sum(n for _, n in by_stage[stage])) for stage in STAGES},
        models=sorted(models, key=lambda m: -m.predictions), relabels=relabels)
