"""The store contract, run on both backends (a local folder and S3 at a loopback endpoint),
and the S3 error translation: a setting to fix (StoreError) vs an outage (StoreUnavailable)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from facexpr.storage.store import (
    LocalStore,
    S3Store,
    StoreError,
    StoreUnavailable,
    clean_metadata,
    open_store,
)
from tests.s3server import closed_port_url

PNG = b"\x89PNG\r\n\x1a\n" + b"not really, but bytes are bytes"


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "relabeled")
    setup = request.getfixturevalue("s3")
    return S3Store(setup.bucket, "relabeled")


def test_put_get_metadata_round_trip(store):
    location = store.put("happy/abc.png", PNG, {"predicted-expression": "sad", "confidence": "0.5"})
    assert store.get("happy/abc.png") == PNG
    assert store.exists("happy/abc.png")
    assert store.metadata("happy/abc.png") == {"predicted-expression": "sad", "confidence": "0.5"}
    assert location == store.location("happy/abc.png")
    if isinstance(store, S3Store):
        assert location == f"s3://{store.bucket}/relabeled/happy/abc.png"
    else:
        assert Path(location).read_bytes() == PNG


def test_metadata_of_a_key_that_is_gone_is_empty_not_an_error(store):
    """Another writer may delete an answer between a settle's exists() and its metadata read."""
    store.put("fear/gone.png", PNG, {"saved-at": "2026-06-01T09:00:00+00:00"})
    store.delete("fear/gone.png")
    assert store.metadata("fear/gone.png") == {}
    assert store.metadata("fear/never.png") == {}


def test_put_twice_is_one_object(store):
    store.put("sad/x.png", PNG, {"a": "1"})
    store.put("sad/x.png", PNG, {"a": "1"})
    assert store.list_keys() == ["sad/x.png"]


def test_list_prefix_is_a_string_prefix_and_skips_metadata(store):
    for key in ("happy/1.png", "happy/2.png", "sad/1.png", "surprise/1.png"):
        store.put(key, PNG, {"k": "v"})
    assert store.list_keys() == ["happy/1.png", "happy/2.png", "sad/1.png", "surprise/1.png"]
    assert store.list_keys("happy/") == ["happy/1.png", "happy/2.png"]
    assert store.list_keys("s") == ["sad/1.png", "surprise/1.png"]
    assert store.list_keys("angry/") == []


def test_list_objects_carry_arrival_time(store):
    before = datetime.now(UTC) - timedelta(seconds=2)
    store.put("fear/1.png", PNG)
    [obj] = store.list_objects()
    assert obj.key == "fear/1.png" and obj.size == len(PNG)
    assert before <= obj.modified <= datetime.now(UTC) + timedelta(seconds=2)


def test_delete_is_idempotent(store):
    store.put("angry/1.png", PNG, {"k": "v"})
    store.delete("angry/1.png")
    store.delete("angry/1.png")  # gone already: not an error
    assert not store.exists("angry/1.png")
    assert store.list_keys() == []


def test_missing_object_and_bad_keys(store):
    assert not store.exists("neutral/none.png")
    with pytest.raises(StoreError):
        store.get("neutral/none.png")
    for bad in ("", "/abs.png", "a/../b.png", "a//b.png"):
        with pytest.raises(StoreError):
            store.put(bad, PNG)


def test_metadata_is_made_header_safe():
    assert clean_metadata({"Model-Version": "v1 é\nx", "n": 3}) == {"model-version": "v1 \\xe9 x", "n": "3"}


def test_open_store_dispatch(tmp_path, s3):
    assert isinstance(open_store(tmp_path), LocalStore)
    s3_store = open_store(f"s3://{s3.bucket}/some/prefix")
    assert isinstance(s3_store, S3Store) and s3_store.prefix == "some/prefix/"
    with pytest.raises(StoreError, match="names no bucket"):
        open_store("s3:///prefix")


# ---- S3: which failures name a setting, which are outages


def test_missing_bucket_names_the_setting(s3):
    store = S3Store("fx-no-such-bucket", "relabeled/")
    assert not store.exists("happy/a.png")  # HEAD cannot tell; the put does
    with pytest.raises(StoreError, match="FACEXPR_S3_BUCKET"):
        store.put("happy/a.png", PNG)
    with pytest.raises(StoreError, match="FACEXPR_S3_BUCKET"):
        store.list_keys()


def test_bad_credentials_name_the_setting(s3):
    store = S3Store(s3.bucket, "relabeled/")
    s3.endpoint.check_credentials(True)  # moto now answers like AWS: it never issued these keys
    with pytest.raises(StoreError, match="AWS_ACCESS_KEY_ID"):
        store.put("happy/a.png", PNG)
    with pytest.raises(StoreError, match="AWS_ACCESS_KEY_ID.*FACEXPR_S3_BUCKET"):
        store.exists("happy/a.png")  # HEAD: a bare 403, either setting may be wrong
    with pytest.raises(StoreError, match="AWS_ACCESS_KEY_ID"):
        store.list_keys()


def test_no_credentials_names_the_setting(s3, monkeypatch, tmp_path):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StoreError, match="AWS_ACCESS_KEY_ID"):
        S3Store(s3.bucket, "relabeled/").put("happy/a.png", PNG)


def test_unreachable_endpoint_is_an_outage(s3, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed_port_url())
    store = S3Store(s3.bucket, "relabeled/")
    for call in (lambda: store.put("happy/a.png", PNG), lambda: store.exists("happy/a.png"),
                 store.list_keys):
        with pytest.raises(StoreUnavailable, match="AWS_ENDPOINT_URL"):
            call()


def test_local_store_unwritable_names_the_setting(tmp_path):
    (tmp_path / "file").write_text("a file where a folder should be")
    store = LocalStore(tmp_path / "file" / "relabeled")
    with pytest.raises(StoreError, match="FACEXPR_DATA_DIR"):
        store.put("happy/a.png", PNG)


def test_local_store_leaves_no_temporary_files(tmp_path):
    store = LocalStore(tmp_path)
    store.put("happy/a.png", PNG, {"k": "v"})
    assert sorted(p.name for p in (tmp_path / "happy").iterdir()) == ["a.png", "a.png.meta.json"]
