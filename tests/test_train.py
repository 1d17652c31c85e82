"""Training end to end on a tiny generated dataset: a loadable model and a complete card."""

import json

import numpy as np
import pytest

from facexpr.data import load_layout
from facexpr.errors import DataError
from facexpr.labels import EXPRESSIONS
from facexpr.model import load_classifier
from facexpr.train import Recipe, train
from tests.conftest import image_bytes


def make_layout(root, per_class: int, seed: int = 0) -> None:
    """Each class a different brightness, so even a tiny net can learn something."""
    rng = np.random.default_rng(seed)
    for i, name in enumerate(EXPRESSIONS):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            pixels = np.clip(i * 36 + rng.normal(0, 8, (48, 48)), 0, 255).astype(np.uint8)
            (root / name / f"{j:03d}.png").write_bytes(image_bytes(pixels))


def tiny_recipe(**kw) -> Recipe:
    return Recipe(epochs=2, batch_size=16, widths=(4, 8), precision="float32", **kw)


def test_train_writes_model_card_and_curve(tmp_path):
    make_layout(tmp_path / "fer" / "train", 6)
    make_layout(tmp_path / "fer" / "val", 2, seed=1)
    make_layout(tmp_path / "relabeled", 1, seed=2)
    (tmp_path / "relabeled" / "happy" / "broken.png").write_bytes(b"not a png")
    card = train(str(tmp_path / "fer"), tmp_path / "models" / "m", relabeled_uri=str(tmp_path / "relabeled"),
                 recipe=tiny_recipe(), verbose=0)
    saved = json.loads((tmp_path / "models" / "m.json").read_text())
    assert saved == card
    assert card["data"]["train"]["counts"] == dict.fromkeys(EXPRESSIONS, 6)
    assert card["data"]["relabeled"]["counts"] == dict.fromkeys(EXPRESSIONS, 1)
    assert card["data"]["relabeled"]["skipped"] == 1
    assert card["val"]["n"] == 14 and len(card["val"]["confusion"]) == 7
    assert card["epochs"] == 2 and len(card["history"]["accuracy"]) == 2 and card["seed"] == 1234
    assert (tmp_path / "models" / "m.png").stat().st_size > 0
    classifier = load_classifier(tmp_path / "models" / "m.keras")
    assert classifier.version == "m" and classifier.predict(np.zeros((2, 48, 48), np.uint8)).shape == (2, 7)


def test_resume_continues_from_the_checkpoint(tmp_path, capsys):
    make_layout(tmp_path / "fer", 4)  # no train/val split: held-out fraction by seed
    out = tmp_path / "models" / "r"
    train(str(tmp_path / "fer"), out, recipe=tiny_recipe(), verbose=0)
    card = train(str(tmp_path / "fer"), out, recipe=tiny_recipe(), resume=True, verbose=0)
    assert "Resuming from epoch 2 of 2" in capsys.readouterr().out
    assert len(card["history"]["accuracy"]) == 2  # nothing retrained, history kept
    with pytest.raises(DataError, match="another recipe"):
        train(str(tmp_path / "fer"), out, recipe=tiny_recipe(seed=7), resume=True, verbose=0)


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="No images found"):
        load_layout(str(tmp_path / "nothing"))


def test_train_cli_takes_the_widths_and_refuses_nonsense(tmp_path, monkeypatch, capsys):
    from facexpr import cli

    seen = {}

    def fake_train(data, out, relabeled_uri, recipe, resume):  # the CLI's part only: no real training
        seen["recipe"] = recipe
        return {"val": {"accuracy": 0.5, "macro_f1": 0.5, "n": 1, "per_class": {}},
                "epochs": recipe.epochs, "wall_time_s": 1.0}

    monkeypatch.setattr("facexpr.train.train", fake_train)
    assert cli.main(["train", "--data", str(tmp_path), "--relabeled", "", "--widths", "8,16,32",
                     "--epochs", "3", "--out", str(tmp_path / "m")]) == 0
    assert seen["recipe"].widths == (8, 16, 32) and seen["recipe"].epochs == 3
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--data", str(tmp_path), "--widths", "8,wide"])
    assert exit_.value.code == 2 and "expected positive channel counts" in capsys.readouterr().err
