"""The model-health figures, checked against values worked out by hand on a small fixture."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facexpr.core.config import Settings
from facexpr.model.classifier import ModelCard
from facexpr.serve.health import (
    MIN_ANSWERS,
    card_metrics,
    f1_comparison,
    health_report,
    live_per_class,
    percentile_from_bins,
    served_card,
    with_rates,
)
from facexpr.serve.health_summary import WINDOWS, health_summary, window_bounds
from facexpr.storage.history import EMBEDDED_FILE, SqliteHistory
from tests.histories import FIXTURE, WINDOW_START, day, doc, no_face_doc


@pytest.fixture
def report(history):
    history.insert_documents(FIXTURE)
    return health_report(history, WINDOW_START, None, since=day(9, 0))


def by_day(frame: pd.DataFrame, column: str) -> dict[str, float]:
    return {d.strftime("%m-%d"): v for d, v in zip(frame["day"], frame[column], strict=True)}


def test_totals_and_predictions_per_day_by_expression(report):
    assert report.total == 6  # the January prediction is outside the window
    daily = {(d.strftime("%m-%d"), e): n for d, e, n in report.daily.itertuples(index=False)}
    assert daily == {("03-08", "happy"): 2, ("03-08", "sad"): 1, ("03-09", "neutral"): 1,
                     ("03-09", "happy"): 1, ("03-10", "surprise"): 1}


def test_confidence_distribution_mean_and_low_share(report):
    hist = report.confidence.set_index("bin_start")["predictions"]
    assert len(hist) == 20 and hist.sum() == 6
    # 0.30 0.40 | 0.55 0.70 0.90 0.95 → bins starting at those 0.05 steps
    filled = {round(k, 2): v for k, v in hist.items() if v}
    assert filled == {0.3: 1, 0.4: 1, 0.55: 1, 0.7: 1, 0.9: 1, 0.95: 1}
    assert report.mean_confidence == pytest.approx(3.8 / 6)
    assert report.low_confidence_share == pytest.approx(2 / 6)  # 0.30 and 0.40
    assert by_day(report.confidence_daily, "mean_confidence") == pytest.approx(
        {"03-08": 2.0 / 3, "03-09": 0.625, "03-10": 0.55})
    assert by_day(report.confidence_daily, "low_confidence_share") == pytest.approx(
        {"03-08": 1 / 3, "03-09": 0.5, "03-10": 0.0})


def test_agreement_with_people_per_day(report):
    assert (report.answered, report.confirmed, report.corrected) == (5, 3, 2)
    assert report.agreement == pytest.approx(0.6)
    assert by_day(report.agreement_daily, "confirmed") == {"03-08": 1, "03-09": 2, "03-10": 0}
    assert by_day(report.agreement_daily, "corrected") == {"03-08": 1, "03-09": 0, "03-10": 1}


def test_confusion_of_predicted_and_human_label(report):
    seen = {(p, h): n for p, h, n in report.confusion.itertuples(index=False) if n}
    assert seen == {("happy", "happy"): 2, ("sad", "angry"): 1, ("neutral", "neutral"): 1,
                    ("surprise", "fear"): 1}
    assert len(report.confusion) == 49


def test_latency_percentiles_by_stage(report):
    lat = report.latency.set_index("stage")
    # Nearest rank over six values: p50 is the 3rd smallest, p95 the 6th.
    expected = {"decode": (3, 6), "detect": (30, 60), "classify": (5, 7), "total": (38, 73)}
    for stage, (p50, p95) in expected.items():
        assert lat.loc[stage, "p50_ms"] == pytest.approx(p50, rel=0.011)
        assert lat.loc[stage, "p95_ms"] == pytest.approx(p95, rel=0.011)
        assert lat.loc[stage, "n"] == 6


def test_comparison_by_model_version(report):
    models = report.models.set_index("model_version")
    assert list(models.index) == ["m1", "m2"]
    assert models.loc["m1", "predictions"] == 3 and models.loc["m2", "predictions"] == 3
    assert models.loc["m1", "mean_confidence"] == pytest.approx(2.0 / 3)
    assert models.loc["m2", "mean_confidence"] == pytest.approx(1.8 / 3)
    assert models.loc["m1", "agreement"] == pytest.approx(1 / 2)
    assert models.loc["m2", "agreement"] == pytest.approx(2 / 3)
    assert (models.loc["m2", "answered"], models.loc["m2", "confirmed"]) == (3, 2)


def test_relabels_gathered_since_training(report):
    relabels = report.relabels.set_index("label")
    assert list(relabels.index) == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert relabels["total"].to_dict() == {"angry": 0, "disgust": 0, "fear": 1, "happy": 1, "sad": 0,
                                           "surprise": 0, "neutral": 1}
    assert relabels.loc["fear", "corrected"] == 1 and relabels.loc["happy", "confirmed"] == 1


def test_the_apis_plain_summary_says_what_the_health_page_says(history):
    """The lean summary (no pandas: /v1/health/summary) and the page's report read the same rows."""
    history.insert_documents(FIXTURE)
    report = health_report(history, WINDOW_START, None, since=day(9, 0))
    summary = health_summary(history, WINDOW_START, None, since=day(9, 0))
    assert (summary.total, summary.answered, summary.confirmed, summary.corrected) == (6, 5, 3, 2)
    assert summary.mean_confidence == pytest.approx(report.mean_confidence)
    assert summary.low_confidence_share == pytest.approx(report.low_confidence_share)
    assert summary.agreement == pytest.approx(report.agreement)
    assert summary.expressions == {"angry": 0, "disgust": 0, "fear": 0, "happy": 3, "sad": 1, "surprise": 1,
                                   "neutral": 1}
    for row in report.latency.itertuples():
        assert (summary.latency[row.stage].p50_ms, summary.latency[row.stage].p95_ms,
                summary.latency[row.stage].n) == (row.p50_ms, row.p95_ms, row.n)
    assert [(m.model_version, m.predictions, m.answered) for m in summary.models] == [
        (r.model_version, r.predictions, r.answered) for r in report.models.itertuples()]
    assert [m.agreement for m in summary.models] == pytest.approx(list(report.models["agreement"]))
    assert summary.relabels == report.relabels.set_index("label")["total"].to_dict()


def test_live_per_class_scores_against_people(report):
    live = live_per_class(report).set_index("expression")
    assert live.loc["happy", "f1"] == pytest.approx(1.0)
    assert live.loc["angry", "recall"] == 0 and live.loc["angry", "support"] == 1
    assert pd.isna(live.loc["disgust", "f1"])  # nobody said disgust, the model never did


def test_no_face_rate_and_the_source_filter(history):
    history.insert_documents([
        *FIXTURE,  # six faces uploaded in the window, five answered
        doc(day(9, 14), "m2", "happy", 0.80, (1, 10, 4, 15), source="camera"),
        doc(day(9, 15), "m2", "sad", 0.60, (1, 10, 4, 15), source="camera", face_index=1),  # same photo
        no_face_doc(day(8, 11), source="upload"), no_face_doc(day(9, 13), source="camera"),
        no_face_doc(day(10, 1), source="batch"), no_face_doc(day(1, 1), source="batch"),  # March 1: out
    ])
    every = health_report(history, WINDOW_START)
    assert (every.total, every.images, every.no_face) == (8, 10, 3)  # 6 + 1 photo with two faces + 3 none
    assert every.no_face_rate == pytest.approx(0.3)
    camera = health_report(history, WINDOW_START, source="camera")
    assert (camera.total, camera.images, camera.no_face, camera.answered) == (2, 2, 1, 0)
    assert camera.mean_confidence == pytest.approx(0.7)
    assert camera.latency.set_index("stage").loc["total", "n"] == 2
    assert camera.agreement is None and camera.agreement_note == (
        "n = 0 answers: nobody has confirmed or corrected an answer yet.")
    upload = health_report(history, WINDOW_START, source="upload")
    assert (upload.total, upload.images, upload.no_face, upload.answered) == (6, 7, 1, 5)
    batch = health_report(history, WINDOW_START, source="batch")
    assert (batch.total, batch.images, batch.no_face_rate) == (0, 1, 1.0)
    assert not batch.empty  # a failed detection is something to show
    assert health_report(history, WINDOW_START, source="cli").empty


def test_agreement_comes_with_a_note_when_answers_are_too_few(history, report):
    assert report.answered == 5
    assert report.agreement_note == ("n = 5 answers: too few for the agreement to mean much "
                                     f"(it needs {MIN_ANSWERS} or more; each answer moves it by 20%).")
    history.insert_documents(doc(day(10, 12 + i / 10), "m2", "happy", 0.9, (1, 1, 1, 3), ("happy", True))
                             for i in range(MIN_ANSWERS - 5))
    enough = health_report(history, WINDOW_START)
    assert enough.answered == MIN_ANSWERS and enough.agreement_note == f"n = {MIN_ANSWERS} answers."


def test_confusion_rates_are_shares_of_each_true_label():
    frame = pd.DataFrame({"label": ["happy", "happy", "sad", "sad"],
                          "predicted": ["happy", "sad", "happy", "sad"], "count": [3, 1, 0, 0]})
    rates = with_rates(frame)
    assert list(rates["rate"][:2]) == [0.75, 0.25]
    assert rates["rate"][2:].isna().all()  # nobody said sad: no share to show


def test_all_time_and_empty_windows(history):
    history.insert_documents(FIXTURE)
    everything = health_report(history, None, None)
    assert everything.total == 7 and everything.answered == 6
    assert set(everything.models["model_version"]) == {"m0", "m1", "m2"}
    nothing = health_report(history, datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC))
    assert nothing.empty and nothing.mean_confidence is None and nothing.agreement is None
    assert nothing.latency["p50_ms"].isna().all()


def test_an_empty_history_is_an_empty_report(history):
    report = health_report(history, *window_bounds("Last 7 days"))
    assert report.empty and report.total == 0
    assert report.confidence["predictions"].sum() == 0 and report.models.empty


def test_named_windows_end_now():
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    assert window_bounds("Last 24 hours", now) == (now - timedelta(hours=24), None)
    assert window_bounds("Last 30 days", now) == (now - timedelta(days=30), None)
    assert window_bounds("All time", now) == (None, None)
    assert list(WINDOWS)[0] == "Last 24 hours"
    with pytest.raises(ValueError, match="Unknown window"):
        window_bounds("forever")


def test_percentile_is_nearest_rank():
    bins = pd.DataFrame({"bin": [0, 32, 64], "n": [1, 1, 2]})  # 1 ms, 2 ms, 4 ms ×2
    assert percentile_from_bins(bins, 0.25) == pytest.approx(1)
    assert percentile_from_bins(bins, 0.5) == pytest.approx(2)
    assert percentile_from_bins(bins, 0.51) == pytest.approx(4)
    assert percentile_from_bins(bins.iloc[0:0], 0.5) is None


# ---------------------------------------------------------------- rollups agree with the raw rows

moments = st.floats(min_value=0, max_value=6 * 86400, allow_nan=False)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offsets=st.lists(moments, min_size=1, max_size=30), window=st.tuples(moments, moments),
       confidences=st.lists(st.floats(0.05, 1.0), min_size=30, max_size=30))
def test_embedded_rollups_agree_with_counting_rows(tmp_path_factory, offsets, window, confidences):
    """Whole days come from the rollups, partial days from raw rows: any window must add up."""
    origin = datetime(2026, 3, 1, tzinfo=UTC)
    store = SqliteHistory(tmp_path_factory.mktemp("h") / EMBEDDED_FILE)
    sources = ("upload", "camera")
    docs = [no_face_doc(origin + timedelta(seconds=o), source=sources[i % 2]) if i % 5 == 4 else
            doc(origin + timedelta(seconds=o), f"m{i % 2}", "happy" if i % 3 else "sad", confidences[i],
                (1.0 + i, 2.0, 3.0, 6.0 + i), source=sources[i % 2]) for i, o in enumerate(offsets)]
    store.insert_documents(docs)
    lo, hi = sorted(window)
    start, end = origin + timedelta(seconds=lo), origin + timedelta(seconds=hi)
    images = [d for d in docs if start <= d["ts"] < end]
    inside = [d for d in images if not d.get("no_face")]
    report = health_report(store, start, end)
    assert report.total == len(inside)
    assert (report.images, report.no_face) == (len(images), len(images) - len(inside))
    camera = health_report(store, start, end, source="camera")
    assert camera.total == sum(d["source"] == "camera" for d in inside)
    assert camera.no_face == sum(d["source"] == "camera" for d in images if d.get("no_face"))
    if inside:
        assert report.mean_confidence == pytest.approx(sum(d["confidence"] for d in inside) / len(inside))
        assert report.low_confidence_share == pytest.approx(
            sum(d["confidence"] < 0.5 for d in inside) / len(inside))
        totals = sorted(d["latency_ms"]["total"] for d in inside)
        p95 = totals[math.ceil(0.95 * len(totals)) - 1]
        assert report.latency.set_index("stage").loc["total", "p95_ms"] == pytest.approx(p95, rel=0.011)
        per_day = {}
        for d in inside:
            per_day[d["ts"].date()] = per_day.get(d["ts"].date(), 0) + 1
        counted = report.confidence_daily.set_index("day")["predictions"]
        assert {k.date(): v for k, v in counted.items()} == per_day
    store.close()


def test_a_file_with_rollups_from_before_sources_is_rebuilt_on_open(tmp_path):
    """Older files kept rollups without a source column: they are derived data, rebuilt on open."""
    import sqlite3

    path = tmp_path / EMBEDDED_FILE
    store = SqliteHistory(path)
    store.insert_documents(FIXTURE)
    store.close()
    with sqlite3.connect(path) as db:  # make it look like a file of the previous version
        db.executescript("DROP TABLE rollup_confidence; DROP TABLE rollup_latency; "
                         "DROP TABLE rollup_detection; CREATE TABLE daily_confidence (day INTEGER); "
                         "CREATE TABLE daily_latency (day INTEGER);")
    store = SqliteHistory(path)
    try:
        report = health_report(store, WINDOW_START)
        assert (report.total, report.images, report.answered) == (6, 6, 5)
        assert report.latency.set_index("stage").loc["total", "n"] == 6
        tables = {r[0] for r in store._query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "daily_confidence" not in tables and "rollup_confidence" in tables
    finally:
        store.close()


# ---------------------------------------------------------------- the served model's card

CARD = {
    "name": "fer-v2", "trained_at": "2026-03-01T08:00:00+00:00",
    "classes": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
    "data": {"relabeled": {"counts": {"happy": 3, "sad": 1}}},
    "val": {"n": 10, "accuracy": 0.7, "macro_f1": 0.6,
            "per_class": {"happy": {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 5},
                          "sad": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 5}},
            "confusion": [[1 if i == j else 0 for j in range(7)] for i in range(7)]},
}


def test_card_metrics_for_display_beside_the_live_ones(report):
    metrics = card_metrics(ModelCard.from_dict(CARD))
    assert metrics.name == "fer-v2" and metrics.accuracy == 0.7 and metrics.macro_f1 == 0.6
    assert metrics.trained_at == datetime(2026, 3, 1, 8, tzinfo=UTC)
    assert metrics.per_class.set_index("expression").loc["happy", "f1"] == 0.85
    assert len(metrics.confusion) == 49 and metrics.confusion["count"].sum() == 7
    assert metrics.relabeled_in_training == {"happy": 3, "sad": 1}
    both = f1_comparison(metrics, report)
    assert set(both["source"]) == {"offline (validation set)", "live (people's answers)"}
    happy = both[both["expression"] == "happy"].set_index("source")["f1"]
    assert happy["offline (validation set)"] == 0.85
    assert happy["live (people's answers)"] == pytest.approx(1.0)
    assert card_metrics(None) is None


def test_served_card_follows_the_model_setting(tmp_path):
    (tmp_path / "fer-v2.keras").write_bytes(b"not read")
    (tmp_path / "fer-v2.json").write_text(json.dumps(CARD))
    assert served_card(Settings(model=str(tmp_path / "fer-v2.keras"))).name == "fer-v2"
    assert served_card(Settings(), models_dir=tmp_path).name == "fer-v2"
    assert served_card(Settings(), models_dir=tmp_path / "empty") is None
    assert served_card(Settings(model=str(tmp_path / "missing.keras"))) is None


def test_the_versions_chart_names_n_and_greys_out_an_agreement_of_too_few():
    """One answer would show 100 % agreement: the bar says n = 1 and is drawn faint."""
    from facexpr.app.health_charts import models_chart
    from facexpr.serve.health import MIN_ANSWERS

    models = pd.DataFrame([
        {"model_version": "few", "predictions": 40, "answered": 1, "mean_confidence": 0.6,
         "low_confidence_share": 0.3, "agreement": 1.0},
        {"model_version": "many", "predictions": 400, "answered": MIN_ANSWERS, "mean_confidence": 0.7,
         "low_confidence_share": 0.2, "agreement": 0.8}])
    spec = models_chart(models).to_dict()
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"]
             for layer in spec["layer"]]
    assert marks == ["bar", "text"]
    rows = next(iter(spec["datasets"].values()))
    agreement = {r["model_version"]: r for r in rows if r["measure"] == "agreement with people"}
    assert agreement["few"]["few"] and agreement["few"]["n"] == 1
    assert not agreement["many"]["few"] and agreement["many"]["n"] == MIN_ANSWERS


def test_the_latency_chart_writes_each_value_on_its_bar():
    from facexpr.app.health_charts import latency_chart

    latency = pd.DataFrame([{"stage": "total", "n": 10, "p50_ms": 15.0, "p95_ms": 350.0}])
    spec = latency_chart(latency).to_dict()
    text = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "text")
    assert text["encoding"]["text"]["field"] == "ms"
