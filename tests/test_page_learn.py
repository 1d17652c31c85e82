"""The Learn page and the served model through AppTest: a background retrain, Promote, Rollback,
and the app serving what the registry says."""

from __future__ import annotations

import json
import time

import numpy as np
from streamlit.testing.v1 import AppTest

from facexpr.app import jobs
from facexpr.core.config import load_settings
from facexpr.model.registry import ModelRegistry
from tests.conftest import ROOT, SHIPPED_MODEL
from tests.layouts import make_layout
from tests.test_retrain import add_corrections, checkerboard, registered

LEARN = str(ROOT / "pages" / "learn.py")
APP = str(ROOT / "streamlit_app.py")
CLASSIFY = str(ROOT / "pages" / "classify.py")
FAST = {"epochs": 10, "replay": 140, "batch_size": 16, "learning_rate": 0.05, "share": 0.25,
        "precision": "float32"}


def sidebar_model() -> str:
    """The model a new session's sidebar names (a fresh AppTest: a new browser tab)."""
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    shown = [c.value for c in at.sidebar.caption if c.value.startswith("Model **")]
    return shown[0].split("**")[1]


def answered_by(classify: AppTest) -> str:
    """The model named under the answer on the Classify page (this session, re-run)."""
    classify.run()
    assert not classify.exception
    return next(c.value for c in classify.caption if " · model " in c.value).rsplit(" ", 1)[-1]


def test_promote_and_rollback_switch_what_the_app_serves(tiny_model_path, astronaut_bytes):
    settings = load_settings()
    registered(settings, tiny_model_path, "v-one")
    assert sidebar_model() == SHIPPED_MODEL  # an empty registry serves the shipped model
    classify = AppTest.from_file(CLASSIFY, default_timeout=60).run()
    classify.file_uploader(key="upload").set_value(("a.jpg", astronaut_bytes, "image/jpeg"))
    assert answered_by(classify) == SHIPPED_MODEL

    ModelRegistry(settings).promote("v-one")  # e.g. from the CLI, or another replica
    assert sidebar_model() == "v-one" and answered_by(classify) == "v-one"  # new and open sessions

    learn = AppTest.from_file(LEARN, default_timeout=60).run()
    assert not learn.exception and "Serving **v-one**" in learn.markdown[0].value
    assert learn.dataframe[-1].value["served"].tolist() == ["yes"]
    learn.button(key="retrain_rollback").click().run()
    assert not learn.exception and ModelRegistry(settings).served() is None
    assert learn.button(key="retrain_rollback").disabled  # nothing left to roll back
    assert sidebar_model() == SHIPPED_MODEL and answered_by(classify) == SHIPPED_MODEL


def test_learn_page_retrains_in_the_background_then_promotes(tmp_path, tiny_model_path, monkeypatch):
    settings = load_settings()
    registered(settings, tiny_model_path, "tiny-served")
    ModelRegistry(settings).promote("tiny-served")
    make_layout(tmp_path / "fer" / "train", 20)
    make_layout(tmp_path / "fer" / "val", 4, seed=1)
    add_corrections(settings, checkerboard, "disgust", 36)
    monkeypatch.setenv("FACEXPR_TRAIN_DATA", str(tmp_path / "fer"))
    monkeypatch.setenv("FACEXPR_RETRAIN_RECIPE", json.dumps(FAST))

    at = AppTest.from_file(LEARN, default_timeout=60).run()
    assert not at.exception and "Corrections gathered since: **36**" in at.markdown[0].value
    at.button(key="retrain_start").click().run()
    assert not at.exception
    assert jobs.status(settings).running  # the page came back while the job works in its own process
    deadline = time.monotonic() + 300
    while jobs.status(settings).running:
        assert time.monotonic() < deadline, (settings.data_dir / "jobs" / "retrain.log").read_text()
        time.sleep(0.5)
    status = jobs.status(settings)
    assert status.state == "done", (settings.data_dir / "jobs" / "retrain.log").read_text()

    at.run()
    table = at.dataframe[1].value
    assert table["test set"].tolist() == ["FER2013 val", "corrections (cross-fitted)"]
    held = table.set_index("test set").loc["corrections (cross-fitted)"]
    assert float(held["before"]) == 0.0 and float(held["after"]) >= 0.8
    assert status.card["base"]["name"] == "tiny-served"
    assert status.card["guardrail"]["passed"], status.card["guardrail"]
    at.button(key="retrain_promote").click().run()
    assert not at.exception and ModelRegistry(settings).served() == status.name
    assert jobs.status(settings).state == "idle"
    assert np.isfinite(float(held["p (gain by chance)"]))


def finished_retrain(settings, tiny_model_path, name: str, passed: bool, scored: int = 0) -> None:
    """A retrain that ended with NAME in the model store and its card in the job's status; SCORED
    corrections were cross-fitted."""
    registered(settings, tiny_model_path, name, passed=passed)
    figures = {"n": scored, "before": 0.5 if scored else None, "after": 0.6 if scored else None,
               "gained": 1 if scored else 0, "lost": 0, "p_value": 0.5 if scored else 1.0}
    card = {**ModelRegistry(settings).card(name), "wall_time_s": 3.0,
            "data": {"corrections": {"counts": {"happy": 12}}},
            "comparison": {"corrections": figures, "val": {**figures, "n": 4, "before": 0.5, "after": 0.5,
                                                       "gained": 0, "p_value": 1.0}}}
    jobs.write_status(settings, jobs.JobStatus(state="done", name=name, card=card))


def test_a_candidate_promoted_from_the_cli_is_not_offered_for_discard(tiny_model_path):
    """`promote --force` from the CLI while the page is open: a click on Discard then discards
    nothing and crashes nothing, and the page says the version is served and offers neither button."""
    settings = load_settings()
    finished_retrain(settings, tiny_model_path, "forced", passed=False)
    at = AppTest.from_file(LEARN, default_timeout=60).run()
    assert not at.button(key="retrain_discard").disabled
    ModelRegistry(settings).promote("forced", force=True)  # meanwhile, from the CLI
    at.button(key="retrain_discard").click().run()
    assert not at.exception and ModelRegistry(settings).served() == "forced"
    assert "forced" in ModelRegistry(settings).names()
    assert any("forced is served now" in i.value for i in at.info)
    assert at.button(key="retrain_promote").disabled and at.button(key="retrain_discard").disabled


def test_a_test_set_without_faces_shows_a_dash_and_a_failed_one_says_why_promote_is_off(tiny_model_path):
    settings = load_settings()
    finished_retrain(settings, tiny_model_path, "no-heldout", passed=False, scored=0)
    at = AppTest.from_file(LEARN, default_timeout=60).run()
    assert not at.exception
    held = at.dataframe[1].value.set_index("test set").loc["corrections (cross-fitted)"]
    assert held["faces"] == 0 and {held["before"], held["after"], held["p (gain by chance)"]} == {"—"}
    assert at.button(key="retrain_promote").disabled and not at.button(key="retrain_discard").disabled
    assert any("failed the guardrail" in c.value and "--force" in c.value for c in at.caption)
    at.button(key="retrain_discard").click().run()
    assert not at.exception and "no-heldout" not in ModelRegistry(settings).names()


def test_a_retrain_that_cannot_pass_is_said_before_it_runs(tmp_path, monkeypatch):
    """One labeller with three corrections: the page says why the guardrail cannot pass and what would
    fix it before anyone waits for a retrain; a labelled photo folder is evidence of its own."""
    settings = load_settings()
    add_corrections(settings, checkerboard, "disgust", 3)
    monkeypatch.setenv("FACEXPR_TRAIN_DATA", str(tmp_path / "fer"))
    at = AppTest.from_file(LEARN, default_timeout=60).run()
    assert not at.exception and not at.button(key="retrain_start").disabled
    assert any("cannot pass" in w.value and "at least 2 more" in w.value for w in at.warning)
    monkeypatch.setenv("FACEXPR_PHOTOS_VAL", str(tmp_path / "photos"))
    at = AppTest.from_file(LEARN, default_timeout=60).run()
    assert not any("cannot pass" in w.value for w in at.warning)
    assert any(str(tmp_path / "photos") in c.value for c in at.caption)


def test_only_named_people_may_change_what_is_served_when_the_deployment_says_so(tiny_model_path,
                                                                                 monkeypatch):
    """FACEXPR_MODEL_ADMINS: a stranger and a signed-in person not on the list see every button that
    changes the served model off, with the reason; a named person (any letter case) may use them."""
    settings = load_settings()
    registered(settings, tiny_model_path, "v-admin")
    ModelRegistry(settings).promote("v-admin")

    def page(user: dict) -> AppTest:
        at = AppTest.from_file(LEARN, default_timeout=60)
        at.user = user
        return at.run()

    assert not page({}).button(key="retrain_rollback").disabled  # a laptop: no list, anyone
    monkeypatch.setenv("FACEXPR_MODEL_ADMINS", "Ana@example.org, ops@example.org")
    stranger = page({})
    assert stranger.button(key="retrain_rollback").disabled
    assert "Sign in to continue" in stranger.info[0].value and stranger.button(key="retrain_start").disabled
    bob = page({"is_logged_in": True, "email": "bob@example.org"})
    assert bob.button(key="retrain_rollback").disabled and "bob@example.org may not" in bob.info[0].value
    ana = page({"is_logged_in": True, "email": "ana@EXAMPLE.org"})
    assert not ana.button(key="retrain_rollback").disabled
    assert not any("FACEXPR_MODEL_ADMINS" in i.value for i in ana.info)
    ana.button(key="retrain_rollback").click().run()
    assert not ana.exception and ModelRegistry(settings).served() is None
