"""The model store in S3 (a real S3 endpoint on loopback): every replica serves what it says."""

from __future__ import annotations

from dataclasses import replace

from facexpr.core.config import load_settings
from facexpr.model.classifier import load_classifier
from facexpr.model.registry import ModelRegistry, models_uri, served_model_path
from tests.test_retrain import registered


def test_versions_and_the_served_one_live_in_s3(s3, tiny_model_path, tmp_path):
    settings = load_settings()
    assert models_uri(settings) == f"s3://{s3.bucket}/models/"
    registered(settings, tiny_model_path, "s3-one")
    registered(settings, tiny_model_path, "s3-two")
    registry = ModelRegistry(settings)
    registry.promote("s3-one")
    registry.promote("s3-two")
    assert s3.keys("models/") == ["models/registry.json", "models/s3-one.json", "models/s3-one.keras",
                                  "models/s3-two.json", "models/s3-two.keras"]

    # Another replica, with its own local folder, serves the same version (downloaded once).
    replica = replace(settings, data_dir=tmp_path / "replica")
    path = served_model_path(replica)
    assert path is not None and path.startswith(str(tmp_path / "replica"))
    assert load_classifier(path).version == "s3-two"
    assert {v.name: v.served for v in ModelRegistry(replica).versions()} == {"s3-two": True, "s3-one": False}
    ModelRegistry(replica).rollback()
    assert load_classifier(served_model_path(settings)).version == "s3-one"  # the first one sees it

    # S3 down: a replica keeps serving the last version it read and holds, not the shipped model.
    s3.endpoint.stop()
    assert load_classifier(served_model_path(settings)).version == "s3-one"
