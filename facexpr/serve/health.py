"""Model health: what the live history says about the served model, beside its model card.

Every figure comes from the history's aggregate queries (Mongo pipelines or SQL over rollups,
see `facexpr.storage.history`), which return at most a few thousand grouped rows whatever the number
of documents; this module only reshapes those small results into frames for the charts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from facexpr.core.config import Settings
from facexpr.core.errors import ModelError
from facexpr.core.labels import EXPRESSIONS
from facexpr.core.times import utc
from facexpr.model.classifier import MODELS_DIR, ModelCard, card_path, newest_model, read_card
from facexpr.serve.health_summary import LOW_BIN, PERCENTILES, nearest_rank
from facexpr.storage.history import CONFIDENCE_BINS, STAGES, History

MIN_ANSWERS = 20  # below this many answers an agreement share moves by 5 points or more per answer


@dataclass(frozen=True)
class HealthReport:
    """The live figures for one time window; every frame is small (days × classes at most)."""

    start: datetime | None
    end: datetime | None
    since: datetime | None  # relabels are counted from here (the served model's training time)
    total: int  # predictions (faces) in the window
    answered: int  # of those, how many a person confirmed or corrected
    confirmed: int
    images: int  # images classified (with or without a face)
    no_face: int  # of those, images in which the detector found no face
    mean_confidence: float | None
    low_confidence_share: float | None  # share of answers with confidence < 0.5
    daily: pd.DataFrame  # day, expression, predictions
    confidence: pd.DataFrame  # bin_start, bin_end, predictions (all bins, zeros included)
    confidence_daily: pd.DataFrame  # day, predictions, mean_confidence, low_confidence_share
    agreement_daily: pd.DataFrame  # day, confirmed, corrected, agreement
    confusion: pd.DataFrame  # predicted, label, count (7 × 7, zeros included; label = the person's)
    latency: pd.DataFrame  # stage, p50_ms, p95_ms, n
    models: pd.DataFrame  # model_version, predictions, mean_confidence, low_confidence_share,
    #                       answered, confirmed, agreement
    relabels: pd.DataFrame  # label, confirmed, corrected, total (all seven)
    source: str | None = None  # the figures count this source only (None: every source)
    extra: dict[str, Any] = field(default_factory=dict)
    # model_version, predicted, label, confirmed, n: people's answers per version (`of_version`)
    answers_by_version: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["model_version", "predicted", "label", "confirmed", "n"]))
    version: str | None = None  # the answers count this model version only (None: every version)

    def of_version(self, name: str) -> HealthReport:
        """The same report with people's answers (agreement, confusion) to NAME's predictions only:
        what belongs beside that model's card."""
        mine = self.answers_by_version[self.answers_by_version["model_version"] == name]
        confirmed = int(mine["n"].where(mine["confirmed"].astype(bool), 0).sum())
        return replace(self, answered=int(mine["n"].sum()), confirmed=confirmed, version=name,
                       confusion=_confusion(mine))

    @property
    def empty(self) -> bool:
        return self.total == 0 and self.images == 0

    @property
    def no_face_rate(self) -> float | None:
        """Share of images in which no face was found: the detector's failure rate."""
        return self.no_face / self.images if self.images else None

    @property
    def agreement_note(self) -> str:
        """The agreement's n, and a warning when it is too few (under MIN_ANSWERS) to mean much."""
        answers = f"n = {self.answered:,} answer{'s' if self.answered != 1 else ''}"
        if not self.answered:
            return f"{answers}: nobody has confirmed or corrected an answer yet."
        if self.answered < MIN_ANSWERS:
            return (f"{answers}: too few for the agreement to mean much (it needs {MIN_ANSWERS} or more; "
                    f"each answer moves it by {1 / self.answered:.0%}).")
        return f"{answers}."

    @property
    def agreement(self) -> float | None:
        """Share of people's answers that confirmed the model (None before anyone answered)."""
        return self.confirmed / self.answered if self.answered else None

    @property
    def corrected(self) -> int:
        return self.answered - self.confirmed


def _confusion(answers: pd.DataFrame) -> pd.DataFrame:
    """predicted, label, count: all 7 × 7 pairs, zeros included."""
    grid = pd.MultiIndex.from_product([EXPRESSIONS, EXPRESSIONS], names=["predicted", "label"])
    return (answers.groupby(["predicted", "label"])["n"].sum().reindex(grid, fill_value=0)
            .rename("count").reset_index())


def _days(frame: pd.DataFrame) -> pd.DataFrame:
    if "day" in frame:
        frame["day"] = pd.to_datetime(frame["day"])
    return frame


def _share(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    return (numerator / denominator.where(denominator > 0)).astype(float)


def percentile_from_bins(bins: pd.DataFrame, q: float) -> float | None:
    """Nearest-rank percentile Q from (bin, n) rows: the centre of the bin holding rank ⌈q·N⌉."""
    return nearest_rank(zip(bins["bin"], bins["n"], strict=True), q)


def health_report(history: History, start: datetime | None, end: datetime | None = None,
                  since: datetime | None = None, source: str | None = None) -> HealthReport:
    """The live figures for predictions made in [START, END) (None = open) from HISTORY, of
    SOURCE only when given (relabels gathered count every source: they are all training data).

    Raises HistoryUnavailable when the database cannot be reached.
    """
    cube = pd.DataFrame(history.confidence_cube(start, end, source),
                        columns=["day", "model_version", "expression", "bin", "n", "confidence_sum"])
    answers = pd.DataFrame(history.feedback_counts(start, end, source),
                           columns=["day", "model_version", "predicted", "label", "confirmed", "n"])
    latency_rows = pd.DataFrame(history.latency_bins(start, end, source), columns=["stage", "bin", "n"])
    detection = pd.DataFrame(history.detection_counts(start, end, source),
                             columns=["day", "source", "images", "no_face"])
    relabel_rows = pd.DataFrame(history.relabel_counts(since), columns=["label", "confirmed", "n"])

    cube["low"] = cube["n"].where(cube["bin"] < LOW_BIN, 0)
    total = int(cube["n"].sum())

    daily = (cube.groupby(["day", "expression"], as_index=False)["n"].sum()
             .rename(columns={"n": "predictions"}))
    by_bin = cube.groupby("bin")["n"].sum().reindex(range(CONFIDENCE_BINS), fill_value=0)
    confidence = pd.DataFrame({"bin_start": [b / CONFIDENCE_BINS for b in by_bin.index],
                               "bin_end": [(b + 1) / CONFIDENCE_BINS for b in by_bin.index],
                               "predictions": by_bin.to_numpy(dtype=int)})
    per_day = cube.groupby("day", as_index=False)[["n", "confidence_sum", "low"]].sum()
    confidence_daily = pd.DataFrame({
        "day": per_day["day"], "predictions": per_day["n"],
        "mean_confidence": _share(per_day["confidence_sum"], per_day["n"]),
        "low_confidence_share": _share(per_day["low"], per_day["n"])})

    answers["confirmed_n"] = answers["n"].where(answers["confirmed"].astype(bool), 0)
    per_day_answers = answers.groupby("day", as_index=False)[["n", "confirmed_n"]].sum()
    agreement_daily = pd.DataFrame({
        "day": per_day_answers["day"], "confirmed": per_day_answers["confirmed_n"],
        "corrected": per_day_answers["n"] - per_day_answers["confirmed_n"],
        "agreement": _share(per_day_answers["confirmed_n"], per_day_answers["n"])})

    confusion = _confusion(answers)

    stats = []
    for stage in STAGES:
        rows = latency_rows[latency_rows["stage"] == stage]
        stats.append({"stage": stage, **{f"p{round(q * 100)}_ms": percentile_from_bins(rows, q)
                                         for q in PERCENTILES}, "n": int(rows["n"].sum())})
    latency = pd.DataFrame(stats, columns=["stage", "p50_ms", "p95_ms", "n"])

    per_model = cube.groupby("model_version")[["n", "confidence_sum", "low"]].sum()
    model_answers = answers.groupby("model_version")[["n", "confirmed_n"]].sum()
    models = per_model.join(model_answers, how="outer", rsuffix="_answers").fillna(0).reset_index()
    models = pd.DataFrame({
        "model_version": models["model_version"].astype(str),
        "predictions": models["n"].astype(int),
        "mean_confidence": _share(models["confidence_sum"], models["n"]),
        "low_confidence_share": _share(models["low"], models["n"]),
        "answered": models["n_answers"].astype(int),
        "confirmed": models["confirmed_n"].astype(int),
        "agreement": _share(models["confirmed_n"], models["n_answers"]),
    }).sort_values("predictions", ascending=False, ignore_index=True)

    relabel_rows["confirmed_n"] = relabel_rows["n"].where(relabel_rows["confirmed"].astype(bool), 0)
    gathered = relabel_rows.groupby("label")[["n", "confirmed_n"]].sum().reindex(list(EXPRESSIONS),
                                                                                   fill_value=0)
    relabels = pd.DataFrame({"label": list(EXPRESSIONS),
                             "confirmed": gathered["confirmed_n"].to_numpy(dtype=int),
                             "corrected": (gathered["n"] - gathered["confirmed_n"]).to_numpy(dtype=int),
                             "total": gathered["n"].to_numpy(dtype=int)})

    answered = int(answers["n"].sum())
    return HealthReport(
        start=utc(start), end=utc(end), since=utc(since), total=total, answered=answered,
        confirmed=int(answers["confirmed_n"].sum()),
        images=int(detection["images"].sum()), no_face=int(detection["no_face"].sum()), source=source,
        mean_confidence=float(cube["confidence_sum"].sum() / total) if total else None,
        low_confidence_share=float(cube["low"].sum() / total) if total else None,
        daily=_days(daily), confidence=confidence, confidence_daily=_days(confidence_daily),
        agreement_daily=_days(agreement_daily), confusion=confusion, latency=latency, models=models,
        answers_by_version=answers[["model_version", "predicted", "label", "confirmed", "n"]].copy(),
        relabels=relabels)


def with_rates(confusion: pd.DataFrame) -> pd.DataFrame:
    """CONFUSION (label, predicted, count) with `rate`: each count as a share of its true label's row,
    so a rare class reads as clearly as a common one (None in a row without any count)."""
    row_total = confusion.groupby("label")["count"].transform("sum")
    return confusion.assign(rate=(confusion["count"] / row_total.where(row_total > 0)).astype(float))


def live_per_class(report: HealthReport) -> pd.DataFrame:
    """Precision, recall and F1 per expression against people's labels (only answered predictions)."""
    matrix = report.confusion.pivot(index="label", columns="predicted", values="count")
    matrix = matrix.reindex(index=list(EXPRESSIONS), columns=list(EXPRESSIONS), fill_value=0)
    rows = []
    for name in EXPRESSIONS:
        tp = int(matrix.loc[name, name])
        support = int(matrix.loc[name].sum())  # people said NAME
        predicted = int(matrix[name].sum())  # the model said NAME
        precision = tp / predicted if predicted else None
        recall = tp / support if support else None
        f1 = (2 * precision * recall / (precision + recall)
              if precision is not None and recall is not None and precision + recall else
              (0.0 if precision is not None and recall is not None else None))
        rows.append({"expression": name, "precision": precision, "recall": recall, "f1": f1,
                     "support": support})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the served model's card

@dataclass(frozen=True)
class CardMetrics:
    """The offline figures a model card records for its validation set."""

    name: str
    trained_at: datetime | None
    accuracy: float | None
    macro_f1: float | None
    n: int | None
    per_class: pd.DataFrame  # expression, precision, recall, f1, support
    confusion: pd.DataFrame  # label (true), predicted, count; empty when the card has none
    relabeled_in_training: dict[str, int]


def served_card(settings: Settings, models_dir: Path | None = None, model: str | None = None
                ) -> ModelCard | None:
    """The card of the served model (MODEL, e.g. a session's choice, else FACEXPR_MODEL, else the
    newest in MODELS_DIR), read without loading the network; None when there is none or it is broken."""
    try:
        chosen = model or settings.model
        if chosen and chosen.startswith("s3://"):
            from facexpr.model.source import local_model_path

            chosen = str(local_model_path(chosen, settings))
        path = Path(chosen) if chosen else newest_model(models_dir or MODELS_DIR)
        return read_card(path) if card_path(path).exists() else None
    except ModelError:
        return None


def card_metrics(card: ModelCard | None) -> CardMetrics | None:
    """The card's validation figures as frames (None without a card)."""
    if card is None:
        return None
    val = card.val
    per_class = pd.DataFrame(
        [{"expression": name, **{k: val.per_class.get(name, {}).get(k)
                                 for k in ("precision", "recall", "f1", "support")}} for name in EXPRESSIONS])
    matrix = val.confusion
    confusion = pd.DataFrame(
        [{"label": EXPRESSIONS[i], "predicted": EXPRESSIONS[j], "count": int(matrix[i][j])}
         for i in range(min(len(matrix), len(EXPRESSIONS)))
         for j in range(min(len(matrix[i]), len(EXPRESSIONS)))],
        columns=["label", "predicted", "count"])
    if not confusion.empty and confusion["count"].sum() == 0:
        confusion = confusion.iloc[0:0]  # an all-zero matrix says nothing
    relabeled = (card.data.get("relabeled") or {}).get("counts") or {}
    return CardMetrics(name=card.name, trained_at=card.trained_at, accuracy=val.accuracy,
                       macro_f1=val.macro_f1, n=val.n, per_class=per_class, confusion=confusion,
                       relabeled_in_training={k: int(v) for k, v in relabeled.items()})


def f1_comparison(card: CardMetrics | None, report: HealthReport | None) -> pd.DataFrame:
    """F1 per expression, offline (the card's validation set) beside live (people's answers)."""
    rows: list[dict[str, Any]] = []
    if card is not None:
        rows += [{"expression": r.expression, "source": "offline (validation set)", "f1": r.f1}
                 for r in card.per_class.itertuples() if r.f1 is not None and not pd.isna(r.f1)]
    if report is not None and report.answered:
        rows += [{"expression": r.expression, "source": "live (people's answers)", "f1": r.f1}
                 for r in live_per_class(report).itertuples() if r.f1 is not None and not pd.isna(r.f1)]
    return pd.DataFrame(rows, columns=["expression", "source", "f1"])
