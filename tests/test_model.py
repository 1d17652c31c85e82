"""Model code: load, card, batch prediction; and the shipped model's quality."""

import json

import numpy as np
import pytest

from facexpr.errors import ModelError
from facexpr.model import build_network, load_classifier, newest_model, save_model
from facexpr.predict import predict_image
from tests.conftest import shipped_card


def test_predict_gives_probabilities_for_a_batch(tiny_classifier):
    crops = np.random.default_rng(0).integers(0, 255, (5, 48, 48), dtype=np.uint8)
    probs = tiny_classifier.predict(crops)
    assert probs.shape == (5, 7) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert np.allclose(tiny_classifier.predict(crops[2]), probs[2:3], atol=1e-5)  # batch-independent


def test_flip_averaging_makes_mirror_images_agree(tiny_classifier):
    crop = np.random.default_rng(1).integers(0, 255, (1, 48, 48), dtype=np.uint8)
    assert np.allclose(tiny_classifier.predict(crop), tiny_classifier.predict(crop[:, :, ::-1]), atol=1e-5)


def test_a_fifth_stage_works_on_the_3x3_map_without_pooling_it_away():
    network = build_network(widths=(4, 4, 4, 4, 8))
    last_conv = network.get_layer("s4_conv1")
    assert tuple(last_conv.output.shape[1:3]) == (3, 3)  # pooled 48 → 24 → 12 → 6 → 3, then kept
    pools = [layer.name for layer in network.layers if "pool" in layer.name]
    assert pools == [f"s{i}_pool" for i in range(4)]


def test_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_classifier(tmp_path / "nope.keras")


def test_card_with_other_classes_is_refused(tmp_path):
    path = save_model(build_network(widths=(4,)), {"name": "odd", "classes": ["a", "b"]}, tmp_path / "odd")
    with pytest.raises(ModelError, match="not the seven"):
        load_classifier(path)


def test_newest_card_is_the_default(tmp_path):
    for name, when in (("old", "2026-01-01T00:00:00+00:00"), ("new", "2026-06-01T00:00:00+00:00")):
        (tmp_path / f"{name}.keras").write_bytes(b"x")
        (tmp_path / f"{name}.json").write_text(json.dumps({"trained_at": when}))
    assert newest_model(tmp_path).name == "new.keras"
    with pytest.raises(ModelError, match="No model"):
        newest_model(tmp_path / "empty")


card = shipped_card()
shipped = pytest.mark.skipif(card is None, reason="no model committed in models/ yet")


@shipped
def test_shipped_model_card_reports_its_evaluation():
    assert card["val"]["accuracy"] >= 0.62
    assert card["val"]["n"] == sum(card["data"]["val"]["counts"].values())
    assert np.array(card["val"]["confusion"]).sum() == card["val"]["n"]
    for key in ("recipe", "seed", "epochs", "wall_time_s", "machine", "per_class"):
        assert key in card or key in card["val"]
    assert newest_model().stat().st_size < 20 * 2**20


@shipped
def test_the_default_model_is_the_best_one_shipped():
    from facexpr.model import list_models, read_card

    others = {p.stem: read_card(p)["val"]["accuracy"] for p in list_models()}
    assert card["val"]["accuracy"] == max(others.values()), others


@shipped
def test_shipped_model_sees_the_smile(astronaut_bytes):
    p = predict_image(astronaut_bytes, load_classifier())
    assert p.faces[0].expression == "happy"
