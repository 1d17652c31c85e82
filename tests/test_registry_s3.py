"""The model store in S3 (a real S3 endpoint on loopback): every replica serves what it says."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

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
                                  "models/s3-one.tflite", "models/s3-two.json", "models/s3-two.keras",
                                  "models/s3-two.tflite"]

    # Another replica, with its own local folder, serves the same version (downloaded once), on LiteRT.
    replica = replace(settings, data_dir=tmp_path / "replica")
    path = served_model_path(replica)
    assert path is not None and path.startswith(str(tmp_path / "replica"))
    lite = tiny_model_path.with_suffix(".tflite")
    assert Path(path).with_suffix(".tflite").read_bytes() == lite.read_bytes()
    served = load_classifier(path)
    assert (served.version, served.backend) == ("s3-two", "lite")
    assert {v.name: v.served for v in ModelRegistry(replica).versions()} == {"s3-two": True, "s3-one": False}
    ModelRegistry(replica).rollback()
    assert load_classifier(served_model_path(settings)).version == "s3-one"  # the first one sees it

    # S3 down: a replica keeps serving the last version it read and holds, not the shipped model.
    s3.endpoint.stop()
    assert load_classifier(served_model_path(settings)).version == "s3-one"


def test_a_discarded_version_leaves_none_of_its_files(s3, tiny_model_path):
    settings = load_settings()
    registered(settings, tiny_model_path, "gone")
    ModelRegistry(settings).discard("gone")
    assert s3.keys("models/") == []


def test_a_cached_version_from_before_lite_files_gets_its_tflite(s3, tiny_model_path):
    """A replica that cached a version's .keras and card before the store had its .tflite."""
    settings = load_settings()
    registered(settings, tiny_model_path, "older")
    registry = ModelRegistry(settings)
    path = registry.local_path("older")
    path.with_suffix(".tflite").unlink()
    assert registry.local_path("older") == path and path.with_suffix(".tflite").is_file()
    assert load_classifier(path).backend == "lite"
