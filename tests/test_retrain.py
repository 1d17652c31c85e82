"""Retrain from corrections on tiny generated data (seconds): the loop learns, the guardrail guards,
the registry decides what is served, and import-corrections takes the Classify page's path."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from facexpr.cli import main
from facexpr.core.config import load_settings
from facexpr.core.errors import ModelError
from facexpr.core.labels import EXPRESSIONS, INDEX
from facexpr.learn.correction_set import Corrections, assign_folds
from facexpr.learn.data import Dataset, load_layout
from facexpr.learn.guardrail import cannot_pass, fewest_changes_to_pass, judge, sign_test
from facexpr.learn.retrain import RetrainRecipe, batch_schedule, retrain
from facexpr.learn.train import Recipe, train
from facexpr.model.classifier import load_classifier
from facexpr.model.registry import ModelRegistry, served_model_path
from facexpr.storage.relabel import save_crop
from tests.conftest import image_bytes
from tests.layouts import make_layout


def tiny_retrain(**kw) -> RetrainRecipe:
    return RetrainRecipe(**{"epochs": 3, "replay": 140, "batch_size": 16, "precision": "float32", **kw})


@pytest.fixture(scope="session")
def fer(tmp_path_factory):
    """A FER2013-like layout where each class is a flat brightness (36 × class index)."""
    root = tmp_path_factory.mktemp("fer")
    make_layout(root / "train", 30)
    make_layout(root / "val", 6, seed=1)
    return root


@pytest.fixture(scope="session")
def base_model(fer, tmp_path_factory):
    """A tiny net trained on the brightness layout: good on its val, blind to anything else."""
    out = tmp_path_factory.mktemp("base") / "base-tiny"
    train(str(fer), out, recipe=Recipe(epochs=8, batch_size=16, widths=(8, 16), precision="float32",
                                       learning_rate=0.05, erase_prob=0.0), verbose=0)
    return out.with_suffix(".keras")


def checkerboard(rng) -> np.ndarray:
    """A high-contrast checkerboard with jitter: nothing like the flat faces the base learnt."""
    cell = int(rng.integers(4, 9))
    yy, xx = np.indices((48, 48))
    board = ((yy // cell + xx // cell) % 2 * 200 + 25).astype(np.float64)
    return np.clip(board + rng.normal(0, 10, board.shape), 0, 255).astype(np.uint8)


def add_corrections(settings, make, label: str | list[str], n: int, people: int = 6, seed: int = 0,
                    crop_geometry: str | None = "fer-template") -> list[np.ndarray]:
    """N crops made by MAKE saved as corrections under LABEL (or the i-th of a list of labels), from
    PEOPLE people (None: one labeller in one session, every crop from its own photo)."""
    rng = np.random.default_rng(seed)
    crops = [make(rng) for _ in range(n)]
    for i, crop in enumerate(crops):
        save_crop(settings, crop, label if isinstance(label, str) else label[i], predicted="happy",
                  confidence=0.5, model_version="base-tiny",
                  group=f"person{i % people}" if people else "one-session", crop_geometry=crop_geometry,
                  image_sha256=None if people else hashlib.sha256(crop.tobytes()).hexdigest())
    return crops


def test_corrections_cut_another_way_are_left_out_and_said(fer, base_model, capsys):
    """Crops saved before alignment (no crop geometry recorded: the Haar box) are not mixed into a
    retrain of a model that reads aligned faces; the refusal says how many and why."""
    settings = load_settings()
    add_corrections(settings, checkerboard, "disgust", 6, crop_geometry=None)
    assert main(["retrain", "--data", str(fer), "--out", "mixed", "--model", str(base_model)]) == 2
    err = capsys.readouterr().err
    assert "6 cut another way: 6 with haar-box" in err and "Traceback" not in err


def test_corrections_teach_a_pattern_the_base_never_predicts(fer, base_model, capsys):
    settings = load_settings()
    boards = add_corrections(settings, checkerboard, "disgust", 36)
    base = load_classifier(base_model)
    assert (base.predict(np.stack(boards)).argmax(1) != INDEX["disgust"]).all()  # never, before

    assert main(["retrain", "--data", str(fer), "--out", "boards", "--model", str(base_model),
                 "--epochs", "3", "--replay", "140", "--learning-rate", "0.05", "--share", "0.5"]) == 0
    out = capsys.readouterr().out
    registry = ModelRegistry(settings)
    card = registry.card("boards")
    assert card["base"]["name"] == "base-tiny"
    assert card["data"]["corrections"]["counts"]["disgust"] == 36 and card["data"]["replay"]["n"] == 140
    assert card["data"]["cross_fitting"] | {"rule": ""} == {"folds": 3, "by": "people", "units": 6,
                                                            "sizes": [12, 12, 12], "rule": ""}
    crossfit = card["comparison"]["corrections"]
    assert crossfit["n"] == 36  # every correction, each scored by a fold that never saw it
    assert crossfit["before"] == 0.0 and crossfit["after"] >= 0.8 and crossfit["lost"] == 0
    assert corrections_rule(card)["passed"], card["guardrail"]
    assert "corrections (cross-fitted)" in out and "the guardrail" in out and "boards" in out
    fresh = np.stack([checkerboard(np.random.default_rng(99 + i)) for i in range(5)])
    retrained = load_classifier(registry.local_path("boards"))
    assert retrained.version == "boards"
    assert (retrained.predict(fresh).argmax(1) == INDEX["disgust"]).mean() >= 0.8


def test_guardrail_refuses_a_model_that_loses_val(fer, base_model, capsys):
    settings = load_settings()
    # People "correct" the flat faces of a brightness the base reads right (class i is 36 × i; the
    # tiny base does not learn every class the same way each run) to another class: learnt, it costs
    # that class's val faces.
    val = load_layout(str(fer / "val"))
    right = load_classifier(base_model).predict(val.images).argmax(1) == val.labels
    known = next(i for i in range(7) if right[val.labels == i].all())
    wrong = EXPRESSIONS[(known + 3) % 7]
    add_corrections(settings, lambda rng: np.clip(36 * known + rng.normal(0, 8, (48, 48)), 0, 255)
                    .astype(np.uint8), wrong, 36)
    result = retrain(settings, str(fer), "loses-val", tiny_retrain(share=0.8, learning_rate=0.05),
                     base_path=str(base_model))
    verdict = result.record["guardrail"]
    val_rule = next(r for r in verdict["rules"] if "val" in r["rule"])
    assert result.record["after"]["val"]["accuracy"] < result.record["before"]["val"]["accuracy"] - 0.01
    assert not verdict["passed"] and not val_rule["passed"] and "val" in verdict["reason"]
    registry = ModelRegistry(settings)
    registry.add(result.keras_path)
    with pytest.raises(ModelError, match="failed its guardrail"):
        registry.promote("loses-val")
    assert served_model_path(settings) is None  # still the shipped model
    assert main(["promote", "loses-val"]) == 2
    assert "failed its guardrail" in capsys.readouterr().err
    assert main(["promote", "loses-val", "--force"]) == 0
    assert registry.state().log[-1]["forced"] is True


def test_judge_rules_fixed_beforehand():
    gain = {"n": 40, "before": 0.5, "after": 0.75, "gained": 10, "lost": 0, "p_value": sign_test(10, 0)}
    noise = {"n": 40, "before": 0.5, "after": 0.55, "gained": 4, "lost": 2, "p_value": sign_test(4, 2)}
    assert judge({"before": 0.65, "after": 0.641}, gain, None).passed  # −0.9 points is allowed
    assert not judge({"before": 0.65, "after": 0.638}, gain, None).passed  # −1.2 points is not
    assert not judge({"before": 0.65, "after": 0.66}, noise, None).passed  # a gain within noise
    assert judge({"before": 0.65, "after": 0.65}, noise, gain).passed  # photos alone may carry it
    assert sign_test(5, 0) == pytest.approx(1 / 32) and sign_test(0, 0) == 1.0


def corrections_rule(card: dict) -> dict:
    """The guardrail's verdict on the cross-fitted corrections (the tiny val's own rule is noisy:
    one of its 42 faces is 2.4 points)."""
    return next(r for r in card["guardrail"]["rules"] if r["rule"] == "gain on corrections (cross-fitted)")


def corrections_of(groups: list[str], photos: list[str]) -> Corrections:
    n = len(groups)
    data = Dataset(np.zeros((n, 48, 48), np.uint8), np.zeros(n, np.int64), [f"k{i}" for i in range(n)], "t")
    return Corrections(data, groups, photos, [""] * n, ["fer-template"] * n)


def test_folds_keep_people_whole_and_fall_back_to_photos_for_one_labeller():
    people = [f"group:p{i % 7}" for i in range(70)]
    folds = assign_folds(corrections_of(people, [f"image:{i}" for i in range(70)]), 3)
    assert (folds.k, folds.by, folds.units) == (3, "people", 7) and sum(folds.sizes()) == 70
    for person in set(people):  # a person's corrections are all in one fold
        assert len({int(folds.of[i]) for i, g in enumerate(people) if g == person}) == 1
    assert min(folds.sizes()) >= 20  # 7 people dealt into 3 folds: 3 + 2 + 2
    # One labeller in one session: whole photos instead (two faces of one photo stay together).
    photos = [f"image:{i // 2}" for i in range(12)]
    alone = assign_folds(corrections_of(["group:me"] * 12, photos), 3)
    assert (alone.k, alone.by, alone.units) == (3, "photos", 6)
    assert all(alone.of[i] == alone.of[i + 1] for i in range(0, 12, 2))
    few = assign_folds(corrections_of(["group:me"] * 2, ["crop:a", "crop:b"]), 5)
    assert (few.k, few.by) == (2, "faces")  # never more folds than units
    one = assign_folds(corrections_of(["group:me"], ["image:x"]), 3)
    assert one.k == 0 and (one.of == -1).all()  # nothing to split


def test_one_labeller_in_one_session_can_pass_and_shuffled_labels_cannot(fer, base_model, tmp_path,
                                                                          monkeypatch):
    """Issue 22: one labeller's corrections carry real evidence once every correction is scored by
    a fine-tune that never saw it; the same faces with shuffled labels are refused."""
    monkeypatch.setenv("FACEXPR_DATA_DIR", str(tmp_path / "real"))
    settings = load_settings()
    # 18 faces and 4 epochs: with 12 and 3 a fold's fine-tune sometimes learnt too little on another
    # CPU (3 gained in CI); these gained 15–18 of 18 over 9 base/fine-tune seed pairs here.
    recipe = tiny_retrain(share=0.5, learning_rate=0.05, epochs=4)
    add_corrections(settings, checkerboard, "disgust", 18, people=None)
    result = retrain(settings, str(fer), "one-labeller", recipe, base_path=str(base_model))
    card = result.record
    assert card["data"]["cross_fitting"]["by"] == "photos" and card["data"]["cross_fitting"]["folds"] == 3
    assert card["comparison"]["corrections"]["gained"] >= fewest_changes_to_pass()
    assert corrections_rule(card)["passed"], card["guardrail"]

    monkeypatch.setenv("FACEXPR_DATA_DIR", str(tmp_path / "shuffled"))
    settings = load_settings()
    labels = [label for label in INDEX for _ in range(3)][:21]
    np.random.default_rng(3).shuffle(labels)
    add_corrections(settings, checkerboard, labels, 21, people=None)
    result = retrain(settings, str(fer), "shuffled", recipe, base_path=str(base_model))
    assert not result.passed and not corrections_rule(result.record)["passed"]


def test_too_few_corrections_are_said_before_a_retrain():
    assert fewest_changes_to_pass() == 5 and sign_test(5, 0) < 0.05 <= sign_test(4, 0)
    assert "Confirm or correct at least 2 more" in cannot_pass(3, photo_folder=False)
    assert cannot_pass(3, photo_folder=True) is None and cannot_pass(5, photo_folder=False) is None


def test_batches_hold_the_share_of_corrections():
    index, steps = batch_schedule(10, 96, RetrainRecipe(epochs=2, batch_size=16, share=0.25))
    assert index.shape == (2 * steps, 16) and steps == 8
    corrections = index < 10
    assert (corrections.sum(1) == 4).all()
    assert np.bincount(index[corrections], minlength=10).min() >= 6  # each seen about equally
    assert sorted(index[0:steps][~corrections[0:steps]] - 10) == list(range(96))  # replay once per epoch


def registered(settings, tiny_model_path, name: str, passed: bool = True):
    """A copy of the tiny model in the model store under NAME, with a retrain card."""
    card = json.loads(tiny_model_path.with_suffix(".json").read_text())
    card.update(name=name, trained_at=f"2026-02-0{len(name) % 9 + 1}T00:00:00+00:00",
                base={"name": "tiny-test"},
                after={"val": {"accuracy": 0.5}, "corrections": {"accuracy": 0.9, "n": 10}},
                guardrail={"passed": passed, "reason": "test", "rules": []})
    work = settings.data_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{name}.keras").write_bytes(tiny_model_path.read_bytes())
    (work / f"{name}.tflite").write_bytes(tiny_model_path.with_suffix(".tflite").read_bytes())
    (work / f"{name}.json").write_text(json.dumps(card))
    return ModelRegistry(settings).add(work / f"{name}.keras")


def test_promote_and_rollback_switch_what_the_cli_serves(tiny_model_path, tmp_path, astronaut_bytes, capsys,
                                                          monkeypatch):
    settings = load_settings()
    registered(settings, tiny_model_path, "v-one")
    registered(settings, tiny_model_path, "v-two")
    photo = tmp_path / "face.jpg"
    photo.write_bytes(astronaut_bytes)

    def answered_by() -> str:
        capsys.readouterr()
        assert main(["predict", str(photo), "--json", "--no-record"]) == 0
        return json.loads(capsys.readouterr().out)["model_version"]

    shipped = answered_by()
    assert shipped not in ("v-one", "v-two")
    assert main(["promote", "v-one"]) == 0 and answered_by() == "v-one"
    assert main(["promote", "v-two"]) == 0 and answered_by() == "v-two"
    capsys.readouterr()
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert [line.split()[-1] for line in listing.splitlines() if line.startswith("v-two")] == ["yes"]
    assert main(["rollback"]) == 0 and answered_by() == "v-one"
    assert main(["rollback"]) == 0 and answered_by() == shipped
    assert main(["rollback"]) == 2  # nothing left to roll back
    log = ModelRegistry(settings).state().log
    assert [(e["action"], e["name"]) for e in log] == [("promote", "v-one"), ("promote", "v-two"),
                                                      ("rollback", "v-one"), ("rollback", None)]
    monkeypatch.setenv("FACEXPR_MODEL", str(tiny_model_path))  # the environment still overrides
    assert main(["promote", "v-two"]) == 0 and answered_by() == "tiny-test"


def test_import_corrections_takes_the_classify_path(tmp_path, astronaut_bytes, two_faces_bytes,
                                                    blank_photo_bytes, use_tiny_model, capsys):
    from facexpr.storage.history import open_history

    photos = tmp_path / "photos"
    for label, name, data in (("happy", "a.jpg", astronaut_bytes), ("sad", "two.png", two_faces_bytes),
                              ("angry", "blank.png", blank_photo_bytes),
                              ("fear", "notes.jpg", b"not an image"),
                              ("surprise", "crop.png", image_bytes(np.full((48, 48), 90, np.uint8)))):
        (photos / label).mkdir(parents=True)
        (photos / label / name).write_bytes(data)
    (photos / "unknown").mkdir()
    (photos / "unknown" / "x.jpg").write_bytes(astronaut_bytes)  # not an expression: not read

    assert main(["import-corrections", str(photos), "--group", r"^(\w)"]) == 2  # one file unreadable
    captured = capsys.readouterr()
    assert "imported 2" in captured.out and "no face 1, several faces 1, unreadable 1" in captured.out
    assert "angry/blank.png: no face found" in captured.err and "sad/two.png: several faces" in captured.err
    settings = load_settings()
    relabeled = sorted(p.relative_to(settings.data_dir / "relabeled").parts[0]
                       for p in (settings.data_dir / "relabeled").rglob("*.png"))
    assert relabeled == ["happy", "surprise"]  # nothing stored for the skipped photos
    assert len(list((settings.data_dir / "originals").glob("*"))) == 4  # 2 originals + their metadata
    meta = json.loads(next((settings.data_dir / "relabeled" / "happy").glob("*.meta.json")).read_text())
    assert meta["group"] == "a" and meta["label"] == "happy" and len(meta["image-sha256"]) == 64
    history = open_history(settings)
    docs = [history.get(str(i)) for i in range(1, history.count() + 1)]
    assert len(docs) == 2 and {d["source"] for d in docs} == {"import"}
    assert sorted(d["feedback"]["label"] for d in docs) == ["happy", "surprise"]
