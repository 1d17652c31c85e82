"""Model health: how the served model does on live traffic, beside its model card's offline scores."""

import streamlit as st

from facexpr.app import health_charts as charts
from facexpr.app.ui import get_history, get_settings, served_model, through_the_entry_script
from facexpr.serve import health, health_summary
from facexpr.storage.history import SOURCES, HistoryError, HistoryUnavailable


def chart(figure, empty_note: str) -> None:
    if figure is None:
        st.caption(empty_note)
    else:
        st.altair_chart(figure, width="stretch")


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


through_the_entry_script()  # a deep link as the first request (facexpr.app.ui)
st.title("Model health")
st.caption("Every face the app classifies is recorded with its answer, confidence and timings; "
           "people's confirmations and corrections show how often the model is right.")

windows = list(health_summary.WINDOWS)
pick_window, pick_source = st.columns(2)
window = pick_window.selectbox("Time window", windows, index=windows.index(health_summary.DEFAULT_WINDOW),
                               key="health_window")
source = pick_source.selectbox("Source", [None, *SOURCES], key="health_source",
                               format_func=lambda s: "All sources" if s is None else s,
                               help="Where the photos came from: the Classify page (upload or camera), the "
                                    "Batch page, the command line, or the HTTP API (api)")
card = health.card_metrics(health.served_card(get_settings(), model=served_model()))
report = None
try:
    history = get_history()
    report = health.health_report(history, *health_summary.window_bounds(window),
                                  since=card.trained_at if card else None, source=source)
    if history.pending():
        st.info(f"{history.pending()} write(s) are kept locally and wait for the database.")
except HistoryUnavailable as exc:
    st.warning(f"Database unreachable: live figures cannot be shown now. {exc} "
               "Predictions are still answered and kept locally until it is back.")
except HistoryError as exc:
    st.error(str(exc))

if report is not None and report.empty:
    st.info(f"No predictions recorded ({window.lower()}{f', source {source}' if source else ''}). "
            "Classify a photo on the Classify page and it shows up here; confirm or correct an answer "
            "to see how often the model is right.")

if report is not None and not report.empty:
    cols = st.columns(4)
    cols[0].metric("Faces classified", f"{report.total:,}")
    cols[1].metric("Mean confidence", percent(report.mean_confidence))
    cols[2].metric("Low confidence (< 50%)", percent(report.low_confidence_share))
    cols[3].metric("Agreement with people", percent(report.agreement),
                   help=f"{report.confirmed} confirmed and {report.corrected} corrected answers")
    cols = st.columns(4)
    cols[0].metric("Images classified", f"{report.images:,}")
    cols[1].metric("No face found", percent(report.no_face_rate),
                   help=f"The detector's failure rate: {report.no_face:,} of {report.images:,} images had no "
                        "face found in them")
    cols[2].metric("Answers from people", f"{report.answered:,}",
                   help="Confirmations and corrections: the n behind the agreement")
    st.caption(f"Agreement with people: {report.agreement_note}")

    st.subheader("Predictions per day")
    chart(charts.daily_chart(report.daily), "No predictions in this window.")

    st.subheader("Confidence")
    left, right = st.columns(2)
    with left:
        chart(charts.confidence_histogram(report.confidence), "No predictions in this window.")
    with right:
        chart(charts.confidence_trend(report.confidence_daily), "No predictions in this window.")

    st.subheader("Agreement with people")
    chart(charts.agreement_chart(report.agreement_daily), "Nobody has confirmed or corrected an answer yet.")

    st.subheader("Latency by stage")
    chart(charts.latency_chart(report.latency), "No timings in this window.")

    st.subheader("Model versions")
    chart(charts.models_chart(report.models), "No predictions in this window.")
    share = {"format": "percent"}  # the shares are 0–1, shown as 62.5 % like the rest of the page
    # Short headers (the full names on hover): on a phone the table was cut at the right edge.
    st.dataframe(report.models, hide_index=True, width="stretch",
                 column_order=["model_version", "predictions", "agreement", "answered", "confirmed",
                               "mean_confidence", "low_confidence_share"], column_config={
        "model_version": "model",
        "predictions": st.column_config.NumberColumn("faces", help="faces classified"),
        "agreement": st.column_config.NumberColumn("agree", help="agreement with people", **share),
        "answered": st.column_config.NumberColumn("answers", help="answers from people: the n behind agree"),
        "confirmed": st.column_config.NumberColumn("conf.", help="answers that confirmed the model"),
        "mean_confidence": st.column_config.NumberColumn("mean", help="mean confidence", **share),
        "low_confidence_share": st.column_config.NumberColumn("< 50%", help="share of answers below 50 % "
                                                                          "confidence", **share),
    })

st.subheader("Offline (model card) beside live")
offline, live = st.columns(2)
with offline:
    if card is None:
        st.caption("No model card found for the served model.")
    else:
        st.metric(f"Validation accuracy · {card.name}", percent(card.accuracy),
                  help=f"macro F1 {card.macro_f1}" if card.macro_f1 is not None else None)
        st.caption("Validation set (rows: true label; each cell: count · share of its row)")
        chart(charts.confusion_chart(card.confusion, truth="true label"), "The card has no confusion matrix.")
# Beside a card, only its own version's answers: other versions' would be another model's figures.
mine = report.of_version(card.name) if report is not None and card is not None else report
with live:
    st.metric("Live agreement with people" + (f" · {card.name}" if card else ""),
              percent(mine.agreement if mine else None),
              help="Share of people's answers to this model version's predictions that confirmed it, "
                   "in the chosen window (every version: the versions table above)")
    if mine is not None:
        st.caption(mine.agreement_note[0].upper() + mine.agreement_note[1:])
    st.caption("People's answers (rows: their label; each cell: count · share of its row)")
    chart(charts.confusion_chart(mine.confusion) if mine else None, "No answers from people yet.")
st.caption("F1 per expression: the validation set beside people's answers to the same model")
chart(charts.f1_chart(health.f1_comparison(card, mine)), "No per-class F1 to compare yet.")

if report is not None:
    since = (f"since {card.trained_at:%Y-%m-%d %H:%M} UTC, when {card.name} was trained"
             if card and card.trained_at else "so far")
    st.subheader("Relabels gathered")
    st.caption(f"Images people confirmed or corrected {since}, from every source: the next training run "
               "learns from them.")
    chart(charts.relabels_chart(report.relabels), "None yet.")
