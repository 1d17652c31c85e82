"""Model code: load, card, batch prediction; and the shipped model's quality."""

import json

import numpy as np
import pytest

from facexpr.core.errors import ModelError
from facexpr.model.classifier import (
    ModelCard,
    build_network,
    list_models,
    load_classifier,
    newest_model,
    read_card,
    save_model,
)
from facexpr.model.lite import lite_path
from facexpr.model.predict import predict_image
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
    path = save_model(build_network(widths=(4,)), ModelCard(name="odd"), tmp_path / "odd")
    path.with_suffix(".json").write_text(json.dumps({"name": "odd", "classes": ["a", "b"]}))
    with pytest.raises(ModelError, match="not the seven"):
        load_classifier(path)


def test_newest_card_is_the_default(tmp_path):
    for name, when in (("old", "2026-01-01T00:00:00+00:00"), ("new", "2026-06-01T00:00:00+00:00")):
        (tmp_path / f"{name}.keras").write_bytes(b"x")
        (tmp_path / f"{name}.json").write_text(json.dumps({"trained_at": when}))
    assert newest_model(tmp_path).name == "new.keras"
    with pytest.raises(ModelError, match="No model"):
        newest_model(tmp_path / "empty")


def test_a_card_round_trip_keeps_every_section(tmp_path):
    raw = {"name": "m", "trained_at": "2026-06-01T00:00:00+00:00", "val": {"accuracy": 0.5, "n": 2},
           "retrain": {"corrections": 12}, "photos": {"accuracy": 0.4}, "epochs": 3}
    card = ModelCard.from_dict(raw)
    assert card.val.accuracy == 0.5 and card.epochs == 3 and card.sections["retrain"] == {"corrections": 12}
    assert ModelCard.from_json(card.to_json()) == card
    assert card.to_dict() == raw and list(card.to_dict()) == list(raw)  # the order it was written in, too


@pytest.mark.parametrize("broken", ["{not json", "[1, 2]", '{"trained_at": "last tuesday"}',
                                    '{"val": {"accuracy": "high"}}', '{"classes": ["a", "b"]}'])
def test_a_broken_card_is_a_model_error_and_left_out_of_the_models(tmp_path, broken):
    for name, text in (("good", json.dumps({"trained_at": "2026-01-01T00:00:00+00:00"})), ("bad", broken)):
        (tmp_path / f"{name}.keras").write_bytes(b"x")
        (tmp_path / f"{name}.json").write_text(text)
    with pytest.raises(ModelError, match="model card of bad"):
        read_card(tmp_path / "bad.keras")
    assert list_models(tmp_path) == [tmp_path / "good.keras"]
    assert newest_model(tmp_path) == tmp_path / "good.keras"


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
def test_the_default_model_is_the_one_the_selection_rule_chose():
    """The newest card is served, so it must carry the rule's verdict (`benchmarks.model_select
    --write-card`): every condition held, against every other model shipped beside it."""
    others = {p.stem for p in list_models()} - {card["name"]}
    selection = card["selection"]
    assert all(selection["conditions"].values()), selection["conditions"]
    assert others <= {r["model"] for r in selection["runners_up"]}, others


@shipped
def test_shipped_model_sees_the_smile(astronaut_bytes):
    p = predict_image(astronaut_bytes, load_classifier())
    assert p.faces[0].expression == "happy"


@shipped
def test_the_shipped_model_is_served_from_its_checked_lite_file():
    """A new default model needs its .tflite: `python -m facexpr export models/NAME.keras --val-data
    ../shared/data/fer2013/val` writes it and the card's figures checked here."""
    served = load_classifier()
    assert served.backend == "lite", "run `python -m facexpr export` on the shipped model (README)"
    lite = card["lite"]
    assert lite["val"]["n"] == card["val"]["n"] and lite["val"]["keras_accuracy"] == card["val"]["accuracy"]
    assert lite["val"]["lite_accuracy"] >= lite["val"]["keras_accuracy"] - 0.002
    assert lite_path(newest_model()).stat().st_size < 5 * 2**20
