"""A candidate in shadow (issue 22): the registry names it, it answers recorded faces in the
background onto their history records, its answers are never returned, the Review queue asks about
disagreements first, and the Learn page promotes it once people's answers settle the fixed rule."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from facexpr.app.review import rank
from facexpr.cli import main
from facexpr.core.config import load_settings
from facexpr.core.errors import HistoryError, ModelError
from facexpr.core.labels import INDEX
from facexpr.learn.shadow_evidence import tally
from facexpr.model.classifier import ModelCard, build_network, load_classifier, save_model
from facexpr.model.predict import predict_image
from facexpr.model.registry import ModelRegistry, RegistryState
from facexpr.serve.shadow import ShadowRunner
from facexpr.storage.history import open_history
from tests.apiserver import ApiServer
from tests.conftest import ROOT, image_bytes
from tests.histories import NOW
from tests.test_retrain import registered
from tests.test_review import answer

LEARN = str(ROOT / "pages" / "learn.py")


def always(settings, name: str, expression: str, val_passed: bool = True) -> str:
    """A tiny model that answers EXPRESSION to anything, put into the model store as NAME."""
    network = build_network(widths=(4, 8))
    logits = network.get_layer("logits")
    kernel, bias = logits.get_weights()
    bias[INDEX[expression]] = 50.0
    logits.set_weights([kernel * 0, bias])
    crop = {"name": "fer-template", "detector": "blazeface", "template_scale": 1.0}
    card = ModelCard.from_dict({"name": name, "trained_at": "2026-03-01T00:00:00+00:00", "crop": crop,
                                "guardrail": {"passed": False, "reason": "no gain beyond noise", "rules": [
                                    {"rule": "FER2013 val loses ≤ 1 point", "passed": val_passed}]}}, name)
    return ModelRegistry(settings).add(save_model(network, card, settings.data_dir / "work" / name))


def test_the_registry_names_one_shadow_candidate_until_promoted_or_discarded(tiny_model_path, capsys):
    settings = load_settings()
    registry = ModelRegistry(settings)
    registered(settings, tiny_model_path, "served-one")
    registered(settings, tiny_model_path, "cand-a")
    registered(settings, tiny_model_path, "cand-b", passed=False)
    registry.promote("served-one")
    with pytest.raises(ModelError, match="is served"):
        registry.set_shadow("served-one")
    registry.set_shadow("cand-a")
    assert RegistryState.from_json(registry.state().to_json()).shadow == "cand-a"  # what replicas read
    assert main(["models"]) == 0
    assert [line.split()[-1] for line in capsys.readouterr().out.splitlines()
            if line.startswith("cand-a")] == ["shadow"]
    registry.promote("cand-a")
    assert registry.state().shadow is None and registry.served() == "cand-a"
    assert main(["shadow", "cand-b"]) == 0 and registry.state().shadow == "cand-b"
    assert main(["shadow"]) == 0 and "cand-b answers in shadow" in capsys.readouterr().out  # no change
    registry.discard("cand-b")
    assert registry.state().shadow is None
    assert [e["action"] for e in registry.state().log] == ["promote", "shadow", "promote", "shadow", "shadow"]


def test_a_shadow_answer_is_kept_on_its_record_on_every_backend(history):
    ids = history.record(answer("a", "sad", 0.6), "upload", NOW - timedelta(hours=1))
    history.attach_shadow(ids[0], "cand", "neutral", 0.7)
    record = history.get(ids[0])
    assert record["expression"] == "sad"  # the served answer stays the answer
    assert record["shadow"] == {"model_version": "cand", "expression": "neutral", "confidence": 0.7}
    assert [r["shadow"]["expression"] for r in history.unanswered(NOW - timedelta(days=1))] == ["neutral"]
    assert history.shadow_answers("cand") == [("sad", "neutral", None)]
    history.attach_feedback(ids[0], "neutral", False, None)
    assert history.shadow_answers("cand") == [("sad", "neutral", "neutral")]
    assert history.shadow_answers("other") == []
    assert history.shadow_answers("cand", served="m2") == [("sad", "neutral", "neutral")]
    assert history.shadow_answers("cand", served="m1") == []  # another served model's answers
    assert history.count() == 1  # a shadow answer is never a record of its own
    with pytest.raises(HistoryError):
        history.attach_shadow("999999" if history.backend == "embedded" else "0" * 24, "cand", "sad", 0.5)


def test_the_shadow_answers_beside_the_served_model_and_never_changes_the_answer(tiny_model_path,
                                                                                 astronaut_bytes):
    settings = load_settings()
    always(settings, "says-surprise", "surprise")
    ModelRegistry(settings).set_shadow("says-surprise")
    served = load_classifier(tiny_model_path)
    prediction = predict_image(astronaut_bytes, served)
    before = [f.expression for f in prediction.faces]
    history = open_history(settings)
    ids = history.record(prediction, "upload")
    runner = ShadowRunner(settings)
    assert runner.submit(prediction, ids)
    runner.drain()
    assert [f.expression for f in prediction.faces] == before  # the answer the caller holds is untouched
    record = history.get(ids[0])
    assert record["model_version"] == "tiny-test" and record["expression"] == before[0]
    shadow = record["shadow"]
    assert (shadow["model_version"], shadow["expression"]) == ("says-surprise", "surprise")

    ready = predict_image(image_bytes(np.full((48, 48), 90, np.uint8)), served)  # a ready crop: any model
    ids = history.record(ready, "upload")
    runner.submit(ready, ids)
    runner.drain()
    assert ready.crop == "image" and history.get(ids[0])["shadow"]["expression"] == "surprise"

    ModelRegistry(settings).set_shadow(None)  # stopped: the next faces get no shadow answer
    runner = ShadowRunner(settings)
    ids = history.record(prediction, "upload")
    runner.submit(prediction, ids)
    runner.drain()
    assert "shadow" not in history.get(ids[0])


def test_a_worse_candidate_is_refused_and_a_better_one_passes_once_enough_disagreements_are_answered():
    card = {"guardrail": {"rules": [{"rule": "FER2013 val loses ≤ 1 point", "passed": True}]}}
    agree = [("happy", "happy", "happy")] * 30  # tell the two apart not at all
    worse = tally("cand", agree + [("sad", "fear", "sad")] * 6 + [("sad", "fear", "fear")] * 2, card)
    assert (worse.disagreements, worse.answered, worse.candidate_right, worse.served_right) == (8, 8, 2, 6)
    assert not worse.passed and "more answered in its favour" in worse.summary()
    better = [("sad", "neutral", "neutral")] * 4 + [("sad", "neutral", None)] * 3
    early = tally("cand", agree + better, card)
    assert not early.passed and early.more_needed == 1 and early.disagreements == 7
    settled = tally("cand", agree + better + [("sad", "neutral", "neutral")], card)
    assert settled.passed and settled.p_value == pytest.approx(1 / 32)
    assert "better beyond noise" in settled.summary()
    forgot = tally("cand", agree + better * 3, {"guardrail": {"rules": [
        {"rule": "FER2013 val loses ≤ 1 point", "passed": False}]}})
    assert not forgot.passed and "cannot be promoted" in forgot.summary()
    assert tally("cand", [("sad", "fear", "angry")] * 9, card).neither_right == 9


def test_review_asks_first_where_the_shadow_disagrees():
    def record(rid: str, confidence: float, shadow: str | None) -> dict:
        return {"id": rid, "ts": NOW, "model_version": "m", "image_sha256": rid, "face_index": 0,
                "expression": "sad", "confidence": confidence,
                **({"shadow": {"model_version": "cand", "expression": shadow}} if shadow else {})}

    ranked = rank([record("unsure", 0.2, None), record("agrees", 0.3, "sad"), record("differs", 0.9, "fear")])
    assert [r["id"] for r in ranked] == ["differs", "unsure", "agrees"]
    shown = {k: v for k, v in ranked[0].items() if k != "shadow"}
    assert "fear" not in str(shown)  # the shadow's answer is never the one shown


def test_the_learn_page_tallies_the_shadow_and_promotes_it_once_the_rule_passes(tiny_model_path):
    settings = load_settings()
    registered(settings, tiny_model_path, "served-now")
    ModelRegistry(settings).promote("served-now")
    always(settings, "cand-shadow", "neutral")
    ModelRegistry(settings).set_shadow("cand-shadow")
    history = open_history(settings)
    earlier = history.record(answer("x", "sad", 0.5, model="served-before"), "upload")
    history.attach_shadow(earlier[0], "cand-shadow", "neutral", 0.9)  # against another model: not counted
    history.attach_feedback(earlier[0], "neutral", False, None)

    def answered(n: int, label: str) -> None:
        for i in range(n):
            ids = history.record(answer(f"{label[0]}{i}", "sad", 0.5, model="served-now"), "upload")
            history.attach_shadow(ids[0], "cand-shadow", "neutral", 0.9)
            history.attach_feedback(ids[0], label, label == "sad", None)

    answered(4, "neutral")
    at = AppTest.from_file(LEARN, default_timeout=60).run()
    assert not at.exception
    assert any("**4** so far, **4** answered" in m.value for m in at.markdown)
    assert at.button(key="shadow_promote").disabled
    assert any("At least 1 more" in i.value for i in at.info)
    answered(1, "neutral")
    at.run()
    assert not at.button(key="shadow_promote").disabled
    assert any("better beyond noise" in s.value for s in at.success)
    at.button(key="shadow_promote").click().run()
    assert not at.exception
    state = ModelRegistry(settings).state()
    assert state.served == "cand-shadow" and state.shadow is None
    assert state.log[-1]["evidence"].startswith("shadow: 5 right vs 0")


def test_the_api_returns_the_served_answer_and_records_the_shadow_one(tiny_model_path, astronaut_bytes,
                                                                      tmp_path):
    settings = load_settings()
    always(settings, "api-shadow", "surprise")
    ModelRegistry(settings).set_shadow("api-shadow")
    env = {"FACEXPR_DATA_DIR": str(settings.data_dir), "FACEXPR_MODEL": str(tiny_model_path)}
    with ApiServer(env, log_path=tmp_path / "server.log") as server:
        response = httpx.post(server.url + "/v1/predictions", timeout=120,
                              files=[("file", ("face.jpg", astronaut_bytes, "image/jpeg"))])
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == "tiny-test" and "api-shadow" not in response.text
        served_answer = body["predictions"][0]["faces"][0]["expression"]
        history = open_history(settings)
        deadline = time.monotonic() + 60  # the shadow answers after the response, in the background
        while "shadow" not in (history.get("1") or {}):
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        record = history.get("1")
        assert record["expression"] == served_answer and record["shadow"]["expression"] == "surprise"
