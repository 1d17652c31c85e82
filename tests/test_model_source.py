"""FACEXPR_MODEL=s3://bucket/key.keras: fetched once (with its card) from a real S3 endpoint."""

from __future__ import annotations

import pytest

import facexpr
from facexpr.core.errors import ModelError
from facexpr.model.source import local_model_path


@pytest.fixture
def model_in_s3(s3, tiny_model_path):
    for suffix in (".keras", ".tflite", ".json"):
        s3.client.put_object(Bucket=s3.bucket, Key=f"models/tiny-test{suffix}",
                             Body=tiny_model_path.with_suffix(suffix).read_bytes())
    return f"s3://{s3.bucket}/models/tiny-test.keras"


def test_a_model_in_s3_is_served(model_in_s3, monkeypatch, isolated_settings):
    monkeypatch.setenv("FACEXPR_MODEL", model_in_s3)
    recognizer = facexpr.Recognizer()
    assert recognizer.model_version == "tiny-test"
    assert recognizer.classifier.card.val.accuracy == 0.5  # the card came along
    assert recognizer.classifier.path.is_relative_to(isolated_settings / "models")
    assert recognizer.classifier.backend == "lite"  # its .tflite came along and matches the card


def test_a_model_in_s3_without_its_tflite_is_served_through_tensorflow(s3, tiny_model_path, monkeypatch):
    for suffix in (".keras", ".json"):
        s3.client.put_object(Bucket=s3.bucket, Key=f"old/tiny-test{suffix}",
                             Body=tiny_model_path.with_suffix(suffix).read_bytes())
    monkeypatch.setenv("FACEXPR_MODEL", f"s3://{s3.bucket}/old/tiny-test.keras")
    recognizer = facexpr.Recognizer()
    assert (recognizer.model_version, recognizer.classifier.backend) == ("tiny-test", "folded")


def test_the_copy_is_reused_and_refreshed_when_the_object_changes(model_in_s3, s3, tiny_model_path):
    first = local_model_path(model_in_s3)
    stamp = first.stat().st_mtime_ns
    assert local_model_path(model_in_s3).stat().st_mtime_ns == stamp  # same size: not fetched again
    s3.client.put_object(Bucket=s3.bucket, Key="models/tiny-test.json", Body=b'{"name": "tiny-test-2"}')
    local_model_path(model_in_s3)
    assert first.with_suffix(".json").read_bytes() == b'{"name": "tiny-test-2"}'


@pytest.mark.parametrize("key, words", [("models/none.keras", "No model at"),
                                         ("models/tiny-test.json", "must name a .keras file")])
def test_a_wrong_model_uri_says_so(model_in_s3, s3, key, words):
    with pytest.raises(ModelError, match=words):
        facexpr.Recognizer(f"s3://{s3.bucket}/{key}")


def test_an_unreachable_bucket_is_a_model_error(monkeypatch):
    from tests.s3server import DUMMY_CREDENTIALS, closed_port_url

    for key, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed_port_url())
    with pytest.raises(ModelError, match="could not be fetched"):
        local_model_path("s3://nowhere/models/x.keras")
