"""`python -m facexpr sync`: delivers the outbox once, says what is left, exits 2 while anything is."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from facexpr.cli import main
from facexpr.core.config import load_settings
from facexpr.storage.relabel import outbox_for, save_crop
from tests.conftest import ROOT


def queue_two(settings) -> list[str]:
    """Two answers saved while the store is down: both wait in the outbox."""
    keys = []
    for seed, label in ((1, "happy"), (2, "neutral")):
        crop = np.random.default_rng(seed).integers(0, 256, (48, 48), dtype=np.uint8)
        result = save_crop(settings, crop, label, predicted="sad", confidence=0.5, model_version="m")
        assert result.queued
        keys.append(f"relabeled/{result.key}")
    return sorted(keys)


def test_empty_outbox_is_fine(capsys):
    assert main(["sync"]) == 0
    assert "nothing to sync" in capsys.readouterr().out


def test_sync_while_down_then_back_delivers_exactly_once(s3, capsys):
    settings = load_settings()
    s3.endpoint.stop()
    keys = queue_two(settings)

    assert main(["sync"]) == 2  # still down: nothing lost, nothing sent
    captured = capsys.readouterr()
    assert "sent 0, failed 2, remaining 2" in captured.out
    assert "AWS_ENDPOINT_URL" in captured.err
    assert len(outbox_for(settings)) == 2

    s3.endpoint.start()
    assert main(["sync"]) == 0
    assert "sent 2, failed 0, remaining 0" in capsys.readouterr().out
    assert s3.keys() == keys
    assert main(["sync"]) == 0  # a second run has nothing to do
    assert "nothing to sync" in capsys.readouterr().out
    assert s3.keys() == keys


def test_wrong_bucket_names_the_setting(s3, monkeypatch, capsys):
    monkeypatch.setenv("FACEXPR_S3_BUCKET", "fx-typo-bucket")
    keys = queue_two(load_settings())
    assert main(["sync"]) == 2
    assert "FACEXPR_S3_BUCKET" in capsys.readouterr().err
    monkeypatch.setenv("FACEXPR_S3_BUCKET", s3.bucket)
    assert main(["sync"]) == 0
    assert s3.keys() == keys


def test_python_dash_m_entry_point(s3):
    s3.endpoint.stop()
    keys = queue_two(load_settings())
    s3.endpoint.start()
    done = subprocess.run([sys.executable, "-m", "facexpr", "sync"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "sent 2, failed 0, remaining 0" in done.stdout
    assert s3.keys() == keys
