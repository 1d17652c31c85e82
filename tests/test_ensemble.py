"""Several models averaged into one candidate file (benchmarks/ensemble.py): what it answers is the
mean of what its members answer, served the same way (its .tflite, flip-averaged)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.ensemble import main as ensemble
from benchmarks.model_select import model_calls
from facexpr.model.classifier import ModelCard, build_network, load_classifier, read_card, save_model
from facexpr.photo.geometry import FER_TEMPLATE, CropGeometry
from tests.layouts import make_layout


def _member(path, seed: int, crop: CropGeometry = FER_TEMPLATE):
    return save_model(build_network(widths=(4, 8), seed=seed), ModelCard(name=path.name, crop=crop), path)


def test_an_average_answers_the_mean_of_its_members(tmp_path):
    a, b = _member(tmp_path / "a", 1), _member(tmp_path / "b", 2)
    make_layout(tmp_path / "val", 2)
    assert ensemble(["--member", str(a), "--member", str(b), "--out", str(tmp_path / "avg"),
                     "--val-data", str(tmp_path / "val")]) == 0
    crops = np.random.default_rng(0).integers(0, 256, (32, 48, 48), dtype=np.uint8)
    served = load_classifier(tmp_path / "avg.keras")
    assert served.lite is not None  # scored as served: through its own .tflite
    mean = np.mean([load_classifier(m, backend="keras").predict(crops) for m in (a, b)], axis=0)
    np.testing.assert_allclose(served.predict(crops), mean, atol=0.01)  # int8 weights in the .tflite
    card = read_card(tmp_path / "avg.keras")
    assert card.data["members"] == ["a", "b"] and card.crop == FER_TEMPLATE
    assert card.val.n == 14 and card.sections["lite"]["val"]["n"] == 14  # its val, its export checked on it
    # What model_select weighs against serving it: two model calls a face, where a member costs one.
    assert model_calls(card) == 2 and model_calls(read_card(a)) == 1


def test_members_that_cut_faces_differently_are_refused(tmp_path):
    a = _member(tmp_path / "a", 1)
    b = _member(tmp_path / "b", 2, crop=CropGeometry.from_dict({"name": "haar-box"}))
    with pytest.raises(SystemExit, match="cut faces differently"):
        ensemble(["--member", str(a), "--member", str(b), "--out", str(tmp_path / "avg")])
    assert not (tmp_path / "avg.keras").exists()
