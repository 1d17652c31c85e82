"""Two `facexpr serve` replicas sharing one S3 endpoint and one history serve one team.

Predictions go through both, each answer through the *other* replica than the one that made the
prediction, and one face is answered again through a third request: one history, one label per
face, the same served model, nothing lost, no outbox left behind.

The S3 endpoint is moto's server on loopback (tests/s3server.py). The history is MongoDB over
the wire: the session's MongoDB-wire server (tests/conftest.py `mongo_wire`, secantusdb), or the
server FACEXPR_TEST_MONGODB_URI names (a real MongoDB); either way in a database of its own,
dropped afterwards. Each replica has a data folder of its own, as on separate hosts.
"""

from __future__ import annotations

import io
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from facexpr.core.config import Settings
from facexpr.core.labels import EXPRESSIONS
from facexpr.storage.history import open_history
from tests.apiserver import ApiServer
from tests.conftest import FIXTURES
from tests.s3server import DUMMY_CREDENTIALS, S3Endpoint

MONGODB_URI = os.environ.get("FACEXPR_TEST_MONGODB_URI")


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def photos() -> dict[str, bytes]:
    """Different photos of faces (different crops, so each answer has its own key)."""
    base = Image.open(FIXTURES / "astronaut.jpg").convert("RGB")
    gray = np.asarray(base.convert("L"))
    return {
        "original.jpg": (FIXTURES / "astronaut.jpg").read_bytes(),
        "mirror.png": _png(ImageOps.mirror(base)),
        "darker.png": _png(ImageEnhance.Brightness(base).enhance(0.8)),
        "brighter.png": _png(ImageEnhance.Brightness(base).enhance(1.2)),
        "framed.png": _png(ImageOps.expand(base, border=40, fill=(128, 128, 128))),
        "pair.png": _png(Image.fromarray(np.concatenate([gray, gray[:, ::-1]], axis=1))),
    }


@pytest.fixture(scope="module")
def mongodb_uri(request) -> str:
    return MONGODB_URI or request.getfixturevalue("mongo_wire").uri


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_model_path, mongodb_uri):
    endpoint = S3Endpoint().start()
    bucket = f"fx-replicas-{uuid.uuid4().hex[:8]}"
    s3 = endpoint.client()
    s3.create_bucket(Bucket=bucket)
    settings = {"FACEXPR_MODEL": str(tiny_model_path), "FACEXPR_S3_BUCKET": bucket,
                "AWS_ENDPOINT_URL": endpoint.url, **DUMMY_CREDENTIALS, "FACEXPR_MONGODB_URI": mongodb_uri,
                "FACEXPR_MONGODB_DB": f"fx_replicas_{uuid.uuid4().hex[:8]}",
                "FACEXPR_API_KEEP_UPLOADS": "1"}  # each answered photo's upload goes to originals/
    replicas = []
    for name in ("a", "b"):
        data_dir = tmp_path_factory.mktemp(f"replica-{name}")
        replica = ApiServer({**settings, "FACEXPR_DATA_DIR": str(data_dir)},
                            log_path=tmp_path_factory.getbasetemp() / f"replica-{name}.log")
        replica.data_dir = data_dir
        replicas.append(replica.launch())
    try:
        for replica in replicas:
            replica.wait_ready()
        history = open_history(Settings(data_dir=tmp_path_factory.mktemp("reader"), mongodb_uri=mongodb_uri,
                                        mongodb_db=settings["FACEXPR_MONGODB_DB"]))
        assert history.backend == "mongodb", history.backend
        yield replicas, s3, bucket, history
        history.close()
        for replica in replicas:
            assert "Traceback" not in replica.log(), replica.log()
    finally:
        for replica in replicas:
            replica.stop()
        from pymongo import MongoClient

        with MongoClient(mongodb_uri) as client:
            client.drop_database(settings["FACEXPR_MONGODB_DB"])
        endpoint.stop()


def keys(s3, bucket: str, prefix: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_two_replicas_serve_one_team(cluster):
    (a, b), s3, bucket, history = cluster
    for replica in (a, b):
        ready = httpx.get(replica.url + "/readyz").json()
        assert ready["ready"], ready
    served = {httpx.get(r.url + "/v1/models").json()["served"] for r in (a, b)}
    assert served == {"tiny-test"}

    # Predictions through both replicas at once.
    jobs = [(name, data, (a, b)[i % 2]) for i, (name, data) in enumerate(photos().items())]

    def predict(job):
        name, data, replica = job
        response = httpx.post(replica.url + "/v1/predictions", files=[("file", (name, data, "image/png"))],
                              timeout=120)
        assert response.status_code == 200, response.text
        return replica, response.json()

    with ThreadPoolExecutor(len(jobs)) as pool:
        answered = list(pool.map(predict, jobs))
    assert {body["model_version"] for _, body in answered} == {"tiny-test"}
    predictions = [(replica, p) for replica, body in answered for p in body["predictions"]]
    assert all(p["faces"] for _, p in predictions), "every photo has a face"
    faces = sum(len(p["faces"]) for _, p in predictions)
    assert faces == len(jobs) + 1  # the pair has two

    # Each face answered through the other replica than the one that predicted it.
    final: dict[str, str] = {}  # record: crop file name → its label
    for n, (replica, p) in enumerate(predictions):
        other = b if replica is a else a
        for face in p["faces"]:
            label = EXPRESSIONS[(n + face["face_index"]) % len(EXPRESSIONS)]
            response = httpx.post(f"{other.url}/v1/predictions/{p['id']}/feedback", timeout=60,
                                  json={"face_index": face["face_index"], "label": label})
            assert response.status_code == 200, response.text
            answer = response.json()
            assert not answer["queued"] and answer["warnings"] == []
            assert answer["location"].startswith(f"s3://{bucket}/relabeled/{label}/")
            final[answer["location"].rsplit("/", 1)[1]] = label

    # A person changes one answer, through the first replica again: the crop moves, one label stays.
    replica, p = predictions[0]
    changed = next(e for e in EXPRESSIONS if e != final[next(iter(final))])
    response = httpx.post(f"{replica.url}/v1/predictions/{p['id']}/feedback", timeout=60,
                          json={"face_index": 0, "label": changed}).json()
    crop = response["location"].rsplit("/", 1)[1]
    assert response["replaced"] == final[crop]
    final[crop] = changed

    # The store: each answered face once, under its last label; each answered photo's original once.
    stored = keys(s3, bucket, "relabeled/")
    assert sorted(stored) == sorted(f"relabeled/{label}/{name}" for name, label in final.items())
    assert len(keys(s3, bucket, "originals/")) == len(jobs)
    kept = [k for k in keys(s3, bucket, "predictions/") if k.endswith("/prediction.json")]
    assert len(kept) == len(predictions)

    # One history: every face once, source api, with its last answer; both replicas report the same.
    assert history.count() == faces
    summaries = [httpx.get(r.url + "/v1/health/summary?window=all").json() for r in (a, b)]
    assert summaries[0] == summaries[1]
    assert summaries[0]["predictions"] == faces and summaries[0]["answered"] == faces
    labels = {}
    for _, row in history_rows(history):
        assert row["source"] == "api"
        labels[row["feedback"]["object_key"].rsplit("/", 1)[1]] = row["feedback"]["label"]
    assert labels == final

    # Nothing waits in a local outbox.
    for replica in (a, b):
        assert not list((Path(replica.data_dir) / "outbox").glob("*.json"))
        assert history.pending() == 0


def history_rows(history):
    """Every record in the shared MongoDB history."""
    client = history._collection()
    return [(str(d["_id"]), d) for d in client.find({})]
