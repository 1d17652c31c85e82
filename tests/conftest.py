"""Shared fixtures: isolated settings, a tiny untrained model, images made on the fly, an S3
endpoint on loopback (tests/s3server.py) and each history backend (tests/histories.py).

Tests never read ../shared or the network; the one photo they carry is public domain
(tests/fixtures/astronaut.jpg: NASA portrait of Eileen Collins, via scikit-image's data).
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.histories import BACKENDS, make_history
from tests.s3server import DUMMY_CREDENTIALS, S3Endpoint, S3Setup

ROOT = Path(__file__).resolve().parent.parent
# The model a checkout serves by default (the newest card in models/): the one name to change when
# another model is adopted (benchmarks/SELECTION.md).
SHIPPED_MODEL = "fer-vgg-v11"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SETTING_KEYS = ("FACEXPR_MODEL", "FACEXPR_DATA_DIR", "FACEXPR_S3_BUCKET", "FACEXPR_S3_PREFIX",
                "FACEXPR_TRAIN_DATA", "FACEXPR_RETRAIN_RECIPE", "FACEXPR_MONGODB_URI", "FACEXPR_MONGODB_DB",
                "AWS_ENDPOINT_URL")


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    """Every test starts on embedded defaults with its own empty data folder."""
    for key in SETTING_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("FACEXPR_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def image_bytes(array: np.ndarray, fmt: str = "PNG", **save_args) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **save_args)
    return buf.getvalue()


@pytest.fixture(scope="session")
def astronaut_bytes() -> bytes:
    """A 512×512 colour JPEG with one smiling frontal face."""
    return (FIXTURES / "astronaut.jpg").read_bytes()


@pytest.fixture(scope="session")
def two_faces_bytes() -> bytes:
    photo = np.asarray(Image.open(FIXTURES / "astronaut.jpg").convert("L"))
    return image_bytes(np.concatenate([photo, photo[:, ::-1]], axis=1))


@pytest.fixture(scope="session")
def blank_photo_bytes() -> bytes:
    """A 300×200 smooth gradient: a valid photo with no face in it."""
    gradient = np.tile(np.linspace(40, 220, 300, dtype=np.uint8), (200, 1))
    return image_bytes(gradient)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """An untrained two-stage network with a model card: loads in a second, answers anything."""
    from facexpr.core.labels import EXPRESSIONS
    from facexpr.model.classifier import ModelCard, build_network, save_model

    out = tmp_path_factory.mktemp("models") / "tiny-test"
    card = {"name": "tiny-test", "trained_at": "2026-01-01T00:00:00+00:00", "classes": list(EXPRESSIONS),
            "crop": {"name": "fer-template", "detector": "blazeface", "template_scale": 1.0},  # as shipped
            "val": {"accuracy": 0.5, "per_class": {}, "confusion": [[0] * 7] * 7}}
    return save_model(build_network(widths=(4, 8)), ModelCard.from_dict(card), out)


@pytest.fixture(scope="session")
def tiny_classifier(tiny_model_path):
    from facexpr.model.classifier import load_classifier

    return load_classifier(tiny_model_path)


@pytest.fixture(scope="session")
def unsure_model_path(tmp_path_factory, tiny_model_path) -> Path:
    """The tiny model with a card that calls every answer under 99 % confidence unsure (all of its)."""
    import json
    import shutil

    out = tmp_path_factory.mktemp("unsure") / "tiny-unsure.keras"
    shutil.copy(tiny_model_path, out)
    shutil.copy(tiny_model_path.with_suffix(".tflite"), out.with_suffix(".tflite"))  # served on LiteRT too
    card = json.loads(tiny_model_path.with_suffix(".json").read_text())
    card.update(name="tiny-unsure", unsure={"below": 0.99})
    out.with_suffix(".json").write_text(json.dumps(card))
    return out


@pytest.fixture
def use_tiny_model(monkeypatch, tiny_model_path) -> Path:
    monkeypatch.setenv("FACEXPR_MODEL", str(tiny_model_path))
    return tiny_model_path


def shipped_card() -> dict | None:
    """The card of the model the app serves by default, if one is committed."""
    from facexpr.core.errors import ModelError
    from facexpr.model.classifier import newest_model

    try:
        return json.loads(newest_model().with_suffix(".json").read_text())
    except ModelError:
        return None


# ---------------------------------------------------------------- S3 on loopback, each history backend

@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[S3Endpoint]:
    endpoint = S3Endpoint().start()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def s3(s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Setup]:
    """A fresh bucket, configured as facexpr's store through the environment."""
    if s3_endpoint.server is None:  # a test stopped it: bring it back on the same port
        s3_endpoint.start()
    for key, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint.url)
    bucket = f"fx-{uuid.uuid4().hex[:12]}"
    client = s3_endpoint.client()
    client.create_bucket(Bucket=bucket)
    monkeypatch.setenv("FACEXPR_S3_BUCKET", bucket)
    yield S3Setup(s3_endpoint, bucket, client)
    if s3_endpoint.server is None:
        s3_endpoint.start()
    s3_endpoint.check_credentials(False)


@pytest.fixture(scope="session")
def mongo_wire(tmp_path_factory):
    """One MongoDB-wire server (secantusd-py, in memory) for the whole session; tests/mongo_wire.py."""
    from tests.mongo_wire import wire_server

    with wire_server(tmp_path_factory.mktemp("mongo-wire"), ":memory:") as server:
        yield server


@pytest.fixture(params=BACKENDS)
def history(request, tmp_path):
    uri = request.getfixturevalue("mongo_wire").uri if request.param == "mongo-wire" else None
    h = make_history(request.param, tmp_path / "data", uri)
    yield h
    if request.param in ("mongodb", "mongo-wire") and h._client is not None:
        h._client.drop_database(h.db_name)
    h.close()
