"""The model-health page's Altair charts, built from `facexpr.serve.health` frames (no Streamlit here).

Each function returns None when its frame has nothing to draw, so the page can say so instead.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from facexpr.core.labels import EXPRESSIONS
from facexpr.serve.health import MIN_ANSWERS, with_rates
from facexpr.storage.history import LOW_CONFIDENCE, STAGES

PALETTE = ["#d1495b", "#66a182", "#8d6a9f", "#edae49", "#00798c", "#f78c6b", "#9aa5b1"]  # FER2013 order
AGREE, CORRECT = "#2a9d8f", "#e76f51"
EXPRESSION_COLOUR = alt.Scale(domain=list(EXPRESSIONS), range=PALETTE)
# Ordinal days: a bar per day with data (a temporal axis would stretch a single day across the chart).
DAY = alt.X("yearmonthdate(day):O", title=None, axis=alt.Axis(format="%b %d", labelAngle=0))
COUNT_AXIS = alt.Axis(tickMinStep=1, format="d")  # counts: whole-number ticks, never 0.2, 0.4 …


# Seven expression names on a phone-wide chart: angled and never dropped (a level axis hid three).
EXPRESSION_AXIS = alt.Axis(labelAngle=-40, labelOverlap=False)


def _nothing(frame: pd.DataFrame | None, column: str | None = None) -> bool:
    return frame is None or frame.empty or (column is not None and frame[column].fillna(0).sum() == 0)


def daily_chart(daily: pd.DataFrame) -> alt.Chart | None:
    """Predictions per day, stacked by expression."""
    if _nothing(daily, "predictions"):
        return None
    return alt.Chart(daily).mark_bar().encode(
        x=DAY,
        y=alt.Y("sum(predictions):Q", title="predictions", axis=COUNT_AXIS),
        color=alt.Color("expression:N", scale=EXPRESSION_COLOUR, sort=list(EXPRESSIONS)),
        order=alt.Order("expression:N"),
        tooltip=[alt.Tooltip("yearmonthdate(day):T", title="day"), "expression:N", "predictions:Q"],
    ).properties(height=260)


def confidence_histogram(bins: pd.DataFrame) -> alt.LayerChart | None:
    """How sure the model was: predictions per confidence bin, low-confidence ones in red."""
    if _nothing(bins, "predictions"):
        return None
    frame = bins.assign(low=bins["bin_end"] <= LOW_CONFIDENCE + 1e-9)
    bars = alt.Chart(frame).mark_bar().encode(
        x=alt.X("bin_start:Q", bin="binned", title="confidence", scale=alt.Scale(domain=[0, 1]),
                axis=alt.Axis(format="%")),
        x2="bin_end:Q",
        y=alt.Y("predictions:Q", title="predictions", axis=COUNT_AXIS),
        color=alt.condition(alt.datum.low, alt.value(CORRECT), alt.value("#577590")),
        tooltip=[alt.Tooltip("bin_start:Q", format=".0%", title="from"),
                 alt.Tooltip("bin_end:Q", format=".0%", title="to"), "predictions:Q"],
    )
    rule = alt.Chart(pd.DataFrame({"x": [LOW_CONFIDENCE]})).mark_rule(strokeDash=[4, 4]).encode(x="x:Q")
    return (bars + rule).properties(height=240)


def confidence_trend(per_day: pd.DataFrame) -> alt.Chart | None:
    """Mean confidence and the share of low-confidence answers, per day."""
    if _nothing(per_day, "predictions"):
        return None
    long = per_day.melt(id_vars=["day", "predictions"], var_name="measure", value_name="value",
                        value_vars=["mean_confidence", "low_confidence_share"])
    long["measure"] = long["measure"].map({"mean_confidence": "mean confidence",
                                           "low_confidence_share": f"share below {LOW_CONFIDENCE:.0%}"})
    return alt.Chart(long).mark_line(point=True).encode(
        x=DAY,
        y=alt.Y("value:Q", title=None, scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        color=alt.Color("measure:N", title=None, scale=alt.Scale(range=["#577590", CORRECT])),
        tooltip=[alt.Tooltip("yearmonthdate(day):T", title="day"), "measure:N",
                 alt.Tooltip("value:Q", format=".1%"), "predictions:Q"],
    ).properties(height=240)


def agreement_chart(per_day: pd.DataFrame) -> alt.Chart | None:
    """People's answers per day: confirmed (the model was right) and corrected."""
    if _nothing(per_day):
        return None
    long = per_day.melt(id_vars=["day"], value_vars=["confirmed", "corrected"], var_name="answer",
                        value_name="answers")
    return alt.Chart(long).mark_bar().encode(
        x=DAY,
        y=alt.Y("answers:Q", title="answers", axis=COUNT_AXIS),
        color=alt.Color("answer:N", title=None, scale=alt.Scale(domain=["confirmed", "corrected"],
                                                               range=[AGREE, CORRECT])),
        tooltip=[alt.Tooltip("yearmonthdate(day):T", title="day"), "answer:N", "answers:Q"],
    ).properties(height=240)


def confusion_chart(confusion: pd.DataFrame, truth: str = "person's label") -> alt.LayerChart | None:
    """A 7×7 heat map: rows the true label (TRUTH names it), columns the prediction. Each cell
    shows its count beside its rate within the true label's row (`health.with_rates`), and the
    colour follows the rate, so a rare class's row reads as clearly as a common one's."""
    if _nothing(confusion, "count"):
        return None
    frame = with_rates(confusion)
    frame["text"] = [f"{n} · {r:.0%}" if n else ""
                     for n, r in zip(frame["count"], frame["rate"], strict=True)]
    base = alt.Chart(frame).encode(
        x=alt.X("predicted:N", sort=list(EXPRESSIONS), title="predicted",
                axis=alt.Axis(labelAngle=-40, labelOverlap=False)),
        # A short title: "person's label (count · share of the row)" was clipped on a phone; the
        # page's caption says what a cell holds.
        y=alt.Y("label:N", sort=list(EXPRESSIONS), title=truth),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("rate:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), legend=None),
        tooltip=[alt.Tooltip("label:N", title=truth), "predicted:N", "count:Q",
                 alt.Tooltip("rate:Q", format=".0%", title=f"share of {truth}")],
    )
    text = base.mark_text(fontSize=10).encode(
        text="text:N",
        color=alt.condition(alt.datum.rate > 0.5, alt.value("white"), alt.value("black")),
    )
    return (cells + text).properties(height=300)


def latency_chart(latency: pd.DataFrame) -> alt.LayerChart | None:
    """p50 and p95 latency of each stage of a prediction, each bar labelled with its value: a p50 of
    15 ms beside a p95 of 350 ms is too short a bar to read."""
    if _nothing(latency, "n"):
        return None
    long = latency.melt(id_vars=["stage"], value_vars=["p50_ms", "p95_ms"], var_name="percentile",
                        value_name="ms").dropna()
    long["percentile"] = long["percentile"].str.replace("_ms", "")
    base = alt.Chart(long).encode(
        x=alt.X("stage:N", sort=list(STAGES), title=None, axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("percentile:N", sort=["p50", "p95"]),
        y=alt.Y("ms:Q", title="milliseconds"),
        tooltip=["stage:N", "percentile:N", alt.Tooltip("ms:Q", format=".1f")],
    )
    bars = base.mark_bar().encode(
        color=alt.Color("percentile:N", title=None, scale=alt.Scale(range=["#577590", "#f3722c"])))
    values = base.mark_text(dy=-6, fontSize=11).encode(text=alt.Text("ms:Q", format=".0f"))
    return (bars + values).properties(height=240)


def models_chart(models: pd.DataFrame) -> alt.LayerChart | None:
    """Model versions side by side: mean confidence, low-confidence share, agreement with people.
    Each bar is labelled with its n; an agreement from fewer than MIN_ANSWERS answers is greyed out
    (one answer would show 100 %)."""
    if _nothing(models, "predictions"):
        return None
    long = models.melt(id_vars=["model_version", "predictions", "answered"],
                       value_vars=["mean_confidence", "low_confidence_share", "agreement"],
                       var_name="measure", value_name="value").dropna(subset=["value"])
    long["n"] = long["predictions"].where(long["measure"] != "agreement", long["answered"]).astype(int)
    long["few"] = (long["measure"] == "agreement") & (long["answered"] < MIN_ANSWERS)
    long["measure"] = long["measure"].map({"mean_confidence": "mean confidence",
                                           "low_confidence_share": f"share below {LOW_CONFIDENCE:.0%}",
                                           "agreement": "agreement with people"})
    base = alt.Chart(long).encode(
        # One word a line: on one line the names were cut to "agreement with p…".
        x=alt.X("measure:N", title=None, axis=alt.Axis(labelAngle=0, labelExpr="split(datum.label, ' ')")),
        xOffset="model_version:N",
        y=alt.Y("value:Q", title=None, scale=alt.Scale(domain=[0, 1.1]),
                axis=alt.Axis(format="%", values=[0, 0.25, 0.5, 0.75, 1])),  # room for the n labels
        tooltip=["model_version:N", "measure:N", alt.Tooltip("value:Q", format=".1%"), "predictions:Q",
                 "answered:Q"],
    )
    bars = base.mark_bar().encode(
        color=alt.Color("model_version:N", title="model"),
        opacity=alt.condition("datum.few", alt.value(0.25), alt.value(1.0)))
    counts = base.mark_text(dy=-6, fontSize=10).encode(text=alt.Text("n:Q", format="d"))
    return (bars + counts).properties(height=240)


def f1_chart(comparison: pd.DataFrame) -> alt.Chart | None:
    """F1 per expression: the card's validation set beside people's answers."""
    if _nothing(comparison):
        return None
    return alt.Chart(comparison).mark_bar().encode(
        x=alt.X("expression:N", sort=list(EXPRESSIONS), title=None, axis=EXPRESSION_AXIS),
        xOffset="source:N",
        y=alt.Y("f1:Q", title="F1", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("source:N", title=None, scale=alt.Scale(range=["#577590", AGREE])),
        tooltip=["expression:N", "source:N", alt.Tooltip("f1:Q", format=".2f")],
    ).properties(height=240)


def relabels_chart(relabels: pd.DataFrame) -> alt.Chart | None:
    """Answers gathered per true label since the served model was trained."""
    if _nothing(relabels, "total"):
        return None
    long = relabels.melt(id_vars=["label"], value_vars=["confirmed", "corrected"], var_name="answer",
                         value_name="images")
    return alt.Chart(long).mark_bar().encode(
        x=alt.X("label:N", sort=list(EXPRESSIONS), title=None, axis=EXPRESSION_AXIS),
        y=alt.Y("images:Q", title="images", axis=COUNT_AXIS),
        color=alt.Color("answer:N", title=None, scale=alt.Scale(domain=["confirmed", "corrected"],
                                                               range=[AGREE, CORRECT])),
        tooltip=["label:N", "answer:N", "images:Q"],
    ).properties(height=220)
