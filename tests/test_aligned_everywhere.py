"""Every way in reads a face the same way: the crop aligned to FER2013's template, as the served
model's card says, and that aligned crop is what gets stored when a person answers.

One test per entry point: Python, the CLI, the HTTP API, the Classify page, Batch, import-corrections,
evaluate, the review queue's kept crops, and a model whose card says `haar-box` (a rollback to a
model fine-tuned on such crops) still gets its own crop.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from facexpr.core.config import load_settings
from facexpr.photo.faces import cut, find_faces
from facexpr.photo.geometry import FER_TEMPLATE, HAAR_BOX
from facexpr.photo.imaging import decode_gray
from facexpr.storage.store import open_store
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def expected(astronaut_bytes):
    """The astronaut's face: its aligned crop and box, and the Haar crop it must differ from."""
    gray = decode_gray(astronaut_bytes)
    (face,) = find_faces(gray, FER_TEMPLATE)
    (haar,) = find_faces(gray, HAAR_BOX)
    aligned, boxed = cut(gray, face, FER_TEMPLATE), cut(gray, haar, HAAR_BOX)
    assert np.abs(aligned.astype(int) - boxed).mean() > 10  # the two crops are told apart
    return aligned, face.box


def stored_crops(uri: str) -> list[np.ndarray]:
    store = open_store(uri)
    return [np.asarray(Image.open(io.BytesIO(store.get(k))).convert("L")) for k in sorted(store.list_keys())
            if k.endswith(".png")]


def test_python(expected, astronaut_bytes, tiny_model_path):
    import facexpr

    (face,) = facexpr.Recognizer(model=tiny_model_path).classify(astronaut_bytes)
    assert np.array_equal(face.crop, expected[0]) and list(face.box) == expected[1].as_list()


def test_cli(expected, tiny_classifier, tiny_model_path, tmp_path):
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes((ROOT / "tests" / "fixtures" / "astronaut.jpg").read_bytes())
    out = subprocess.run([sys.executable, "-m", "facexpr", "predict", str(photo), "--json", "--no-record",
                          "--model", str(tiny_model_path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=300, check=True)
    (face,) = json.loads(out.stdout)["faces"]
    assert face["box"] == expected[1].as_list()
    want = tiny_classifier.predict(expected[0][None])[0]
    assert np.allclose(list(face["probabilities"].values()), want, atol=2e-6)


def test_http_api(expected, astronaut_bytes, tmp_path, tiny_model_path):
    import httpx

    from tests.apiserver import ApiServer

    env = {"FACEXPR_DATA_DIR": str(tmp_path), "FACEXPR_MODEL": str(tiny_model_path)}
    with ApiServer(env, log_path=tmp_path / "api.log") as server:
        answer = httpx.post(server.url + "/v1/predictions", files=[("file", ("a.jpg", astronaut_bytes))],
                            timeout=60).json()
        (prediction,) = answer["predictions"]
        assert prediction["faces"][0]["box"] == expected[1].as_list()
        sent = httpx.post(f"{server.url}/v1/predictions/{prediction['id']}/feedback",
                          json={"face_index": 0, "label": "sad"}, timeout=30)
        assert sent.status_code == 200, sent.text
    (kept,) = stored_crops(str(tmp_path / "relabeled"))
    assert np.array_equal(kept, expected[0])


def test_classify_page_and_its_review_copy(expected, astronaut_bytes, use_tiny_model):
    from streamlit.testing.v1 import AppTest

    from facexpr.app.review import review_uri
    from facexpr.app.ui import widget_named

    at = AppTest.from_file(str(ROOT / "pages" / "classify.py"), default_timeout=60)
    at.run()
    at.file_uploader(key="upload").set_value(("astronaut.jpg", astronaut_bytes, "image/jpeg"))
    at.run()
    settings = load_settings()
    (review_copy,) = [c for c in stored_crops(review_uri(settings)) if c.shape == (48, 48)]
    assert np.array_equal(review_copy, expected[0])  # the review queue shows what the model saw
    widget_named(at.button, "relabel_save").click().run()
    assert not at.exception
    (kept,) = stored_crops(settings.relabeled_uri)
    assert np.array_equal(kept, expected[0])
    (key,) = [k for k in open_store(settings.relabeled_uri).list_keys() if k.endswith(".png")]
    assert open_store(settings.relabeled_uri).metadata(key)["crop-geometry"] == "fer-template"


def test_batch(expected, astronaut_bytes, tiny_classifier):
    from facexpr.serve.batch import classify_files

    (item,) = classify_files([("a.jpg", astronaut_bytes)], tiny_classifier)
    assert np.array_equal(item.prediction.faces[0].crop, expected[0])


def test_import_corrections(expected, astronaut_bytes, tiny_classifier, isolated_settings, tmp_path):
    from facexpr.learn.corrections import import_corrections

    (tmp_path / "photos" / "happy").mkdir(parents=True)
    (tmp_path / "photos" / "happy" / "a.jpg").write_bytes(astronaut_bytes)
    settings = load_settings()
    report = import_corrections(settings, tmp_path / "photos", tiny_classifier, None)
    assert report.imported == 1
    (kept,) = stored_crops(settings.relabeled_uri)
    assert np.array_equal(kept, expected[0])


class _Seen:
    """A classifier that remembers the crops it was shown."""

    def __init__(self, inner) -> None:
        self.inner, self.crops = inner, []
        self.version, self.geometry = inner.version, inner.geometry

    def predict(self, crops):
        self.crops.extend(np.asarray(crops))
        return self.inner.predict(crops)


def test_evaluate(expected, astronaut_bytes, tiny_classifier, tmp_path):
    from facexpr.learn.evaluate import evaluate_dir

    (tmp_path / "happy").mkdir()
    (tmp_path / "happy" / "a.jpg").write_bytes(astronaut_bytes)
    seen = _Seen(tiny_classifier)
    result = evaluate_dir(tmp_path, seen)
    assert result["faces_found"] == 1 and result["crop"]["name"] == "fer-template"
    assert np.array_equal(seen.crops[0], expected[0])


def test_a_haar_box_model_gets_its_own_crop(astronaut_bytes, tiny_model_path, tmp_path):
    """A model whose card predates alignment (or says haar-box) is served the Haar box crop."""
    import shutil

    from facexpr.model.classifier import load_classifier
    from facexpr.model.predict import predict_image

    old = tmp_path / "old-model.keras"
    shutil.copy(tiny_model_path, old)
    card = json.loads(tiny_model_path.with_suffix(".json").read_text())
    del card["crop"]
    card["name"] = "old-model"
    old.with_suffix(".json").write_text(json.dumps(card))
    gray = decode_gray(astronaut_bytes)
    (haar,) = find_faces(gray, HAAR_BOX)
    prediction = predict_image(astronaut_bytes, load_classifier(old))
    assert prediction.crop == "haar-box"
    assert np.array_equal(prediction.faces[0].crop, cut(gray, haar, HAAR_BOX))
