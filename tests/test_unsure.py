"""An answer the model is unsure of says so, with its runner-up, wherever it is shown: the page,
Batch, the CLI, Python and the API. The threshold is the served model's own (its card)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from facexpr.core.labels import EXPRESSIONS
from facexpr.core.types import Box, FaceResult
from facexpr.model.classifier import load_classifier
from facexpr.model.predict import predict_image
from tests.conftest import ROOT


def test_a_face_below_the_threshold_reads_as_a_choice():
    probs = np.array([0.05, 0.0, 0.05, 0.1, 0.3, 0.1, 0.4])
    face = FaceResult(Box(0, 0, 48, 48), np.zeros((48, 48), np.uint8), probs, unsure=True)
    assert face.runner_up == "sad" and face.headline() == "Neutral or sad?"
    assert FaceResult(face.box, face.crop, probs).headline() == "Neutral"
    assert face.to_dict()["unsure"] is True and face.to_dict()["runner_up"] == "sad"


def test_the_threshold_comes_from_the_models_card(astronaut_bytes, tiny_classifier, unsure_model_path):
    assert tiny_classifier.unsure_below is None  # a card without it: never unsure
    assert not predict_image(astronaut_bytes, tiny_classifier).faces[0].unsure
    unsure = load_classifier(unsure_model_path)
    (face,) = predict_image(astronaut_bytes, unsure).faces
    assert unsure.unsure_below == 0.99 and face.unsure and face.runner_up in EXPRESSIONS


def test_the_shipped_model_carries_its_measured_threshold():
    from facexpr.model.classifier import newest_model, read_card

    section = read_card(newest_model()).sections["unsure"]
    assert 0 < section["below"] < 1 and section["accuracy_below"] < 0.5 <= section["accuracy_at_or_above"]


def test_the_classify_page_shows_the_doubt(monkeypatch, unsure_model_path, astronaut_bytes):
    monkeypatch.setenv("FACEXPR_MODEL", str(unsure_model_path))
    at = AppTest.from_file(str(ROOT / "pages" / "classify.py"), default_timeout=60).run()
    at.file_uploader(key="upload").set_value(("a.jpg", astronaut_bytes, "image/jpeg")).run()
    assert not at.exception
    headline = at.subheader[0].value
    assert headline.endswith("?") and " or " in headline
    assert "the model is unsure" in at.markdown[0].value and "99%" in at.markdown[0].value


def test_batch_shows_the_choice(unsure_model_path, astronaut_bytes):
    from facexpr.serve.batch import classify_files, faces_table, results_table

    items = classify_files([("a.jpg", astronaut_bytes)], load_classifier(unsure_model_path))
    assert faces_table(items)["expression"].iloc[0].endswith("?")
    row = results_table(items).iloc[0]
    assert row["unsure"] and row["runner_up"] in EXPRESSIONS and row["expression"] in EXPRESSIONS


@pytest.mark.parametrize("as_json", [False, True])
def test_the_cli_says_unsure(tmp_path, unsure_model_path, astronaut_bytes, capsys, as_json):
    from facexpr.cli import main

    (tmp_path / "a.jpg").write_bytes(astronaut_bytes)
    main(["predict", str(tmp_path / "a.jpg"), "--no-record", "--model", str(unsure_model_path),
          *(["--json"] if as_json else [])])
    out = capsys.readouterr().out
    if as_json:
        (face,) = json.loads(out)["faces"]
        assert face["unsure"] is True and face["runner_up"] in EXPRESSIONS
    else:
        assert "(unsure: or " in out


def test_python_and_the_api_give_the_fields(unsure_model_path, astronaut_bytes, tmp_path):
    import httpx

    import facexpr
    from tests.apiserver import ApiServer

    (face,) = facexpr.Recognizer(model=unsure_model_path).classify(astronaut_bytes)
    assert face.unsure and face.runner_up in EXPRESSIONS
    env = {"FACEXPR_DATA_DIR": str(tmp_path), "FACEXPR_MODEL": str(unsure_model_path)}
    with ApiServer(env, log_path=tmp_path / "api.log") as server:
        answer = httpx.post(server.url + "/v1/predictions", files=[("file", ("a.jpg", astronaut_bytes))],
                            timeout=60).json()
    (face,) = answer["predictions"][0]["faces"]
    assert face["unsure"] is True and face["runner_up"] in EXPRESSIONS


def test_a_new_models_threshold_is_where_its_answers_become_right_more_often_than_not():
    from benchmarks.model_select import unsure_threshold

    # Right 30 % of the time under 0.4 confidence, 45 % in 0.4-0.5, then 60 % and up: unsure below 0.5.
    confidence = np.repeat([0.25, 0.35, 0.45, 0.55, 0.75, 0.95], 20)
    right = np.concatenate([np.arange(20) < n for n in (6, 6, 9, 12, 16, 19)])
    section = unsure_threshold(confidence, right)
    assert section["below"] == 0.5 and section["n_below"] == 60 and section["n_at_or_above"] == 60
    assert section["accuracy_below"] == 0.35 and section["accuracy_at_or_above"] == 0.7833
    # one bin above the edge that is right less often than not moves the edge above it
    right[60:72] = np.arange(12) < 5
    assert unsure_threshold(confidence, right)["below"] == 0.7  # the next bin with answers in it
