"""The HTTP API on a real `facexpr serve` process (uvicorn on loopback), driven over HTTP.

One server per module (TensorFlow starts once): the tiny model, the embedded store and history
under its own data folder. A second one runs with API keys, CORS and a 1 MB cap.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from facexpr.core.config import Settings
from facexpr.core.labels import EXPRESSIONS
from facexpr.model.predict import predict_image
from facexpr.storage.relabel import save_relabel
from tests.apiserver import ApiServer
from tests.conftest import FIXTURES, ROOT, SHIPPED_MODEL, image_bytes
from tests.test_bad_inputs import CORPUS, history_hashes

OPENAPI = ROOT / "docs" / "openapi.json"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_path):
    """A server that keeps uploads (FACEXPR_API_KEEP_UPLOADS), so feedback stores them as the page does."""
    data_dir = tmp_path_factory.mktemp("api-data")
    env = {"FACEXPR_DATA_DIR": str(data_dir), "FACEXPR_MODEL": str(tiny_model_path),
           "FACEXPR_API_KEEP_UPLOADS": "1"}
    with ApiServer(env, log_path=data_dir.parent / "api-server.log") as running:
        running.data_dir = data_dir
        yield running
    assert "Traceback" not in running.log(), running.log()


@pytest.fixture(scope="module")
def locked(tmp_path_factory, tiny_model_path):
    data_dir = tmp_path_factory.mktemp("api-locked")
    env = {"FACEXPR_DATA_DIR": str(data_dir), "FACEXPR_MODEL": str(tiny_model_path),
           "FACEXPR_API_KEYS": "key-one, key-two", "FACEXPR_API_CORS_ORIGINS": "https://app.example",
           "FACEXPR_API_MAX_UPLOAD_MB": "1"}
    with ApiServer(env, log_path=data_dir.parent / "api-locked.log") as running:
        yield running


def post_images(url: str, *images: tuple[str, bytes], **kw) -> httpx.Response:
    return httpx.post(url + "/v1/predictions", files=[("file", (n, d, "image/jpeg")) for n, d in images],
                      timeout=60, **kw)


def feedback(server: ApiServer, prediction_id: str, face_index: int, label: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/predictions/{prediction_id}/feedback",
                      json={"face_index": face_index, "label": label}, timeout=30)


def history_rows(data_dir: Path) -> list[dict]:
    con = sqlite3.connect(data_dir / "history.sqlite3")
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM predictions ORDER BY id")]
    finally:
        con.close()


def stored_crops(data_dir: Path) -> list[str]:
    root = data_dir / "relabeled"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")) if root.exists() else []


@pytest.fixture(scope="module")
def astronaut() -> bytes:
    return (FIXTURES / "astronaut.jpg").read_bytes()


# ---------------------------------------------------------------- liveness and readiness

def test_healthz_and_readyz(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "model": "tiny-test",
                            "checks": {"model": "ok", "store": "ok", "history": "ok"}}


def test_readyz_says_what_is_not_reachable(tmp_path, tiny_model_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should be")
    env = {"FACEXPR_DATA_DIR": str(blocker), "FACEXPR_MODEL": str(tiny_model_path)}
    with ApiServer(env, log_path=tmp_path / "server.log") as broken:
        ready = httpx.get(broken.url + "/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["ready"] is False and body["checks"]["model"] == "ok"
        assert "cannot be opened" in body["checks"]["history"]
        assert httpx.get(broken.url + "/healthz").status_code == 200  # alive, just not ready


# ---------------------------------------------------------------- predictions

def test_prediction_answers_faces_and_records_them(server, astronaut):
    before = len(history_rows(server.data_dir)) if (server.data_dir / "history.sqlite3").exists() else 0
    response = post_images(server.url, ("astronaut.jpg", astronaut))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "tiny-test" and body["latency_ms"] > 0
    (prediction,) = body["predictions"]
    assert re.fullmatch(r"[0-9a-f]{32}", prediction["id"]) and prediction["filename"] == "astronaut.jpg"
    assert prediction["mode"] == "detect"
    assert set(prediction["latency_ms"]) == {"decode", "detect", "classify", "total"}
    (face,) = prediction["faces"]
    assert face["face_index"] == 0 and len(face["box"]) == 4
    assert list(face["probabilities"]) == list(EXPRESSIONS)
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert face["expression"] == max(face["probabilities"], key=face["probabilities"].get)
    rows = history_rows(server.data_dir)[before:]
    assert [(r["source"], r["image_sha256"], r["expression"]) for r in rows] == [
        ("api", prediction["image_sha256"], face["expression"])]


def test_several_files_in_one_request_come_back_in_order(server, astronaut, blank_photo_bytes,
                                                         two_faces_bytes):
    response = post_images(server.url, ("a.jpg", astronaut), ("blank.png", blank_photo_bytes),
                           ("two.png", two_faces_bytes))
    assert response.status_code == 200, response.text
    answers = response.json()["predictions"]
    assert [a["filename"] for a in answers] == ["a.jpg", "blank.png", "two.png"]
    assert [len(a["faces"]) for a in answers] == [1, 0, 2]
    assert len({a["id"] for a in answers}) == 3


def test_a_photo_without_a_face_in_a_batch_is_a_no_face_record_and_feedback_finds_the_right_face(
        server, astronaut, blank_photo_bytes, two_faces_bytes):
    before = len(history_rows(server.data_dir)) if (server.data_dir / "history.sqlite3").exists() else 0
    answers = post_images(server.url, ("blank.png", blank_photo_bytes), ("two.png", two_faces_bytes)
                          ).json()["predictions"]
    rows = history_rows(server.data_dir)[before:]
    assert [(r["face_index"], r["image_sha256"]) for r in rows] == [
        (-1, answers[0]["image_sha256"]), (0, answers[1]["image_sha256"]), (1, answers[1]["image_sha256"])]
    assert feedback(server, answers[1]["id"], 1, "fear").status_code == 200
    answered = [r for r in history_rows(server.data_dir)[before:] if r["feedback_label"]]
    assert [(r["image_sha256"], r["face_index"]) for r in answered] == [(answers[1]["image_sha256"], 1)]


def test_the_same_image_gets_the_same_answer_alone_or_in_a_batch(server, astronaut, two_faces_bytes):
    alone = post_images(server.url, ("a.jpg", astronaut)).json()["predictions"][0]["faces"][0]
    batch = post_images(server.url, ("two.png", two_faces_bytes), ("a.jpg", astronaut)).json()
    together = batch["predictions"][1]["faces"][0]
    assert together["box"] == alone["box"] and together["expression"] == alone["expression"]
    for name in EXPRESSIONS:
        assert together["probabilities"][name] == pytest.approx(alone["probabilities"][name], abs=1e-4)


def test_whole_image_mode_classifies_a_photo_without_a_face(server, blank_photo_bytes):
    response = httpx.post(server.url + "/v1/predictions?faces=whole",
                          files=[("file", ("blank.png", blank_photo_bytes, "image/png"))])
    (answer,) = response.json()["predictions"]
    assert answer["mode"] == "whole" and len(answer["faces"]) == 1


def test_one_bad_file_refuses_the_request_and_records_nothing(server, astronaut):
    rows = len(history_rows(server.data_dir))
    response = post_images(server.url, ("good.jpg", astronaut), ("notes.jpg", b"not a photo at all"))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "bad_image"
    assert "notes.jpg" in response.json()["error"]["message"]
    assert len(history_rows(server.data_dir)) == rows


@pytest.mark.parametrize("request_kw, words", [
    ({}, "file: Field required"),
    ({"data": {"file": "just text"}}, "file"),
    ({"files": [("file", ("a.jpg", b"", "image/jpeg"))]}, "The file is empty."),
    ({"params": {"faces": "sideways"}, "files": [("file", ("a.jpg", b"x", "image/jpeg"))]}, "faces"),
])
def test_malformed_requests_get_a_json_error(server, request_kw, words):
    response = httpx.post(server.url + "/v1/predictions", timeout=30, **request_kw)
    assert response.status_code == 422
    assert words in response.json()["error"]["message"]


FILES = [c for c in CORPUS if c.data is not None]  # a missing path or a folder exists only on the CLI


@pytest.mark.parametrize("index", range(len(FILES)), ids=[c.kind for c in FILES])
def test_bad_input_corpus_through_the_api(server, index):
    case = FILES[index]
    response = httpx.post(server.url + "/v1/predictions", timeout=60,
                          files=[("file", (case.filename, case.data, case.mime))])
    assert "Traceback" not in response.text
    if case.expect == "error":
        body = response.json()
        if len(case.data) > 20 * 2**20:  # over the API's own request cap, before any decoding
            assert response.status_code == 413 and "20 MB limit" in body["error"]["message"]
        else:
            assert response.status_code == 422, response.text
            assert case.words in body["error"]["message"]
        # Nothing of a refused file is kept: no history record, no state for feedback.
        sha = hashlib.sha256(case.data).hexdigest()
        assert sha not in history_hashes(server.data_dir)
        kept = (server.data_dir / "predictions").glob("*/prediction.json")
        assert not any(json.loads(p.read_text())["image_sha256"] == sha for p in kept)
        return
    assert response.status_code == 200, response.text
    faces = response.json()["predictions"][0]["faces"]
    assert {f["expression"] for f in faces} <= set(EXPRESSIONS)
    if case.expect == "noface":
        assert faces == []
    elif case.expect in ("same", "answer"):
        assert faces, f"{case.kind}: no face found"


# ---------------------------------------------------------------- feedback

def test_feedback_stores_the_crop_exactly_as_the_page_does(server, astronaut, tiny_classifier, tmp_path):
    pid = post_images(server.url, ("astronaut.jpg", astronaut)).json()["predictions"][0]["id"]
    response = feedback(server, pid, 0, "sad")
    assert response.status_code == 200, response.text
    answer = response.json()
    # The page's own call on the same photo, into another folder: the same key, the same bytes.
    page = save_relabel(Settings(data_dir=tmp_path), predict_image(astronaut, tiny_classifier), 0, "sad",
                        astronaut)
    assert answer["location"].endswith(page.key) and answer["label"] == "sad" and not answer["queued"]
    assert Path(answer["location"]).read_bytes() == Path(page.location).read_bytes()
    assert (server.data_dir / "originals" / page.original_key).read_bytes() == astronaut
    record = [r for r in history_rows(server.data_dir) if r["feedback_object_key"] == answer["location"]]
    assert [(r["feedback_label"], r["source"]) for r in record] == [("sad", "api")]


def test_by_default_a_prediction_keeps_only_what_feedback_needs(tmp_path, tiny_model_path, astronaut):
    """No upload is kept: a few KB of crops and boxes a prediction, and feedback still stores the
    crop under its label (without an original: the team did not ask for uploads)."""
    env = {"FACEXPR_DATA_DIR": str(tmp_path), "FACEXPR_MODEL": str(tiny_model_path)}
    with ApiServer(env, log_path=tmp_path / "server.log") as lean:
        pid = post_images(lean.url, ("astronaut.jpg", astronaut)).json()["predictions"][0]["id"]
        kept = sorted((tmp_path / "predictions" / pid).iterdir())
        assert [p.name for p in kept] == ["prediction.json"]
        assert kept[0].stat().st_size <= 10_000
        answer = feedback(lean, pid, 0, "sad").json()
        assert Path(answer["location"]).is_file() and answer["label"] == "sad"
    assert not (tmp_path / "originals").exists()


def test_predictions_past_the_feedback_window_are_swept(tmp_path, tiny_classifier, astronaut):
    from datetime import UTC, datetime, timedelta

    from facexpr.serve.answers import AnswerBook, Kept, UnknownPrediction, new_id

    book = AnswerBook(Settings(data_dir=tmp_path), keep_uploads=True, feedback_days=7)
    pid = new_id()
    assert book.keep(Kept(pid, predict_image(astronaut, tiny_classifier), astronaut, [])) is None
    assert len(list((tmp_path / "predictions" / pid).iterdir())) == 2  # the upload, kept when asked
    assert book.sweep(datetime.now(UTC) + timedelta(days=6)) == 0  # inside the window: kept
    assert book.sweep(datetime.now(UTC) + timedelta(days=8)) == 2
    with pytest.raises(UnknownPrediction):
        book.load(pid)


def test_a_server_keeps_no_decoded_photo_for_feedback(tmp_path, tiny_classifier, astronaut):
    """The in-process cache of recent predictions holds their crops, not their photos: a server's
    memory no longer grows with the size of the photos people send (a 2048 × 2048 photo is 4 MB
    decoded; 256 such were a gigabyte)."""
    import gc
    import tracemalloc

    from PIL import Image

    from facexpr.serve.answers import AnswerBook, Kept, new_id

    book = AnswerBook(Settings(data_dir=tmp_path))
    big = np.asarray(Image.open(FIXTURES / "astronaut.jpg").convert("L").resize((2048, 2048)))
    photo = image_bytes(big)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ids = []
        for _ in range(8):
            ids.append(new_id())
            assert book.keep(Kept(ids[-1], predict_image(photo, tiny_classifier), None, [])) is None
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 4_000_000  # with each photo kept: over 33 MB
    saved, _, _ = book.answer(ids[-1], 0, "sad", None)  # feedback still finds the face
    assert saved.label == "sad" and Path(saved.location).is_file()


def test_a_changed_answer_moves_the_crop_one_face_one_label(server, two_faces_bytes):
    prediction = post_images(server.url, ("two.png", two_faces_bytes)).json()["predictions"][0]
    url = f"{server.url}/v1/predictions/{prediction['id']}/feedback"
    first = httpx.post(url, json={"face_index": 1, "label": "fear"}).json()
    second = httpx.post(url, json={"face_index": 1, "label": "Surprise"}).json()
    assert second["label"] == "surprise" and second["replaced"] == "fear"
    sha = Path(first["location"]).name
    assert [k for k in stored_crops(server.data_dir) if k.endswith(sha)] == [f"surprise/{sha}"]
    again = httpx.post(url, json={"face_index": 1, "label": "surprise"}).json()  # a retry stores nothing new
    assert again["replaced"] is None and [k for k in stored_crops(server.data_dir) if k.endswith(sha)] == [
        f"surprise/{sha}"]


@pytest.mark.parametrize("body, status, words", [
    ({"face_index": 0, "label": "glee"}, 422, "choose one of angry, disgust"),
    ({"face_index": 3, "label": "happy"}, 404, "there is no face_index 3"),
    ({"face_index": -1, "label": "happy"}, 422, "face_index"),
    ({"label": "happy"}, 422, "face_index: Field required"),
])
def test_bad_feedback_gets_a_json_error_and_stores_nothing(server, astronaut, body, status, words):
    pid = post_images(server.url, ("astronaut.jpg", astronaut)).json()["predictions"][0]["id"]
    crops = stored_crops(server.data_dir)
    response = httpx.post(f"{server.url}/v1/predictions/{pid}/feedback", json=body)
    assert response.status_code == status and words in response.json()["error"]["message"]
    assert stored_crops(server.data_dir) == crops


def test_feedback_on_an_unknown_prediction_is_404(server):
    response = httpx.post(f"{server.url}/v1/predictions/{'0' * 32}/feedback",
                          json={"face_index": 0, "label": "happy"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_prediction"
    response = feedback(server, "not-an-id", 0, "sad")
    assert response.status_code == 404 and "not a prediction id" in response.json()["error"]["message"]


def test_feedback_on_a_photo_without_a_face_says_so(server, blank_photo_bytes):
    pid = post_images(server.url, ("blank.png", blank_photo_bytes)).json()["predictions"][0]["id"]
    response = feedback(server, pid, 0, "sad")
    assert response.status_code == 404 and "found no face" in response.json()["error"]["message"]


# ---------------------------------------------------------------- models and health

def test_models_lists_the_served_one(server):
    body = httpx.get(server.url + "/v1/models").json()
    assert body["served"] == "tiny-test"
    served = [m for m in body["models"] if m["served"]]
    assert [m["version"] for m in served] == ["tiny-test"] and served[0]["val_accuracy"] == 0.5
    assert served[0]["source"] == "file"  # FACEXPR_MODEL pins it
    assert SHIPPED_MODEL in {m["version"] for m in body["models"]}  # the checkout's models/


def test_health_summary_counts_what_the_api_answered(server, astronaut):
    before = httpx.get(server.url + "/v1/health/summary?window=all").json()
    prediction = post_images(server.url, ("a.jpg", astronaut)).json()["predictions"][0]
    expression = prediction["faces"][0]["expression"]
    httpx.post(f"{server.url}/v1/predictions/{prediction['id']}/feedback",
               json={"face_index": 0, "label": expression})
    after = httpx.get(server.url + "/v1/health/summary", params={"window": "24h"}).json()
    total = httpx.get(server.url + "/v1/health/summary?window=all").json()
    assert total["predictions"] == before["predictions"] + 1
    assert total["expressions"][expression] == before["expressions"][expression] + 1
    assert total["confirmed"] == before["confirmed"] + 1
    assert after["window"] == "24h" and after["served_model"] == "tiny-test" and after["predictions"] >= 1
    assert after["latency_ms"]["total"]["n"] == after["predictions"]
    bad = httpx.get(server.url + "/v1/health/summary?window=fortnight")
    assert bad.status_code == 422 and "window" in bad.json()["error"]["message"]


def test_unknown_routes_and_methods_answer_json(server):
    missing = httpx.get(server.url + "/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = httpx.get(server.url + "/v1/predictions")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


# ---------------------------------------------------------------- keys, CORS, size cap

def test_api_keys_when_configured(locked, astronaut):
    small = image_bytes(np.zeros((48, 48), np.uint8))
    refused = post_images(locked.url, ("a.png", small))
    assert refused.status_code == 401 and "API key" in refused.json()["error"]["message"]
    assert post_images(locked.url, ("a.png", small), headers={"X-API-Key": "wrong"}).status_code == 401
    bearer = post_images(locked.url, ("a.png", small), headers={"Authorization": "Bearer key-two"})
    assert bearer.status_code == 200
    assert post_images(locked.url, ("a.png", small), headers={"X-API-Key": "key-one"}).status_code == 200
    assert httpx.get(locked.url + "/healthz").status_code == 200  # probes need no key
    assert httpx.get(locked.url + "/v1/models").status_code == 401


def test_no_keys_and_no_cors_by_default(server):
    assert httpx.get(server.url + "/v1/models").status_code == 200
    preflight = httpx.options(server.url + "/v1/predictions", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_for_the_configured_origin_only(locked):
    ok = httpx.options(locked.url + "/v1/predictions", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert ok.headers.get("access-control-allow-origin") == "https://app.example"
    other = httpx.options(locked.url + "/v1/predictions", headers={
        "Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in other.headers


def test_size_cap_refuses_large_bodies_with_or_without_a_length(locked):
    big = bytes(2 * 2**20)
    declared = post_images(locked.url, ("big.jpg", big), headers={"X-API-Key": "key-one"})
    assert declared.status_code == 413 and "1 MB limit" in declared.json()["error"]["message"]

    def chunks():
        boundary = b"--b\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'
        for _ in range(8):
            yield bytes(256 * 1024)
        yield b"\r\n--b--\r\n"

    streamed = httpx.post(locked.url + "/v1/predictions", content=chunks(), timeout=30,
                          headers={"X-API-Key": "key-one", "Content-Type": "multipart/form-data; boundary=b"})
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "too_large"
    assert "Traceback" not in locked.log()


# ---------------------------------------------------------------- the schema

def test_committed_schema_matches_the_code_and_the_server(server):
    from facexpr.serve.api import openapi_json

    committed = json.loads(OPENAPI.read_text())
    assert json.loads(openapi_json()) == committed, "docs/openapi.json is stale: run " \
        "`python -m facexpr serve --print-openapi > docs/openapi.json`"
    assert httpx.get(server.url + "/openapi.json").json() == committed
    assert set(committed["paths"]) == {"/v1/predictions", "/v1/predictions/{prediction_id}/feedback",
                                       "/v1/models", "/v1/health/summary", "/healthz", "/readyz"}


schema = schemathesis.openapi.from_path(OPENAPI)


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_generated_requests_never_get_a_server_error(case, server):
    response = case.call(base_url=server.url, timeout=60)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:
        assert set(response.json()) == {"error"} or "ready" in response.json()
