"""Training end to end on a tiny generated dataset: a loadable model and a complete card."""

import json

import numpy as np
import pytest

from facexpr.core.errors import DataError
from facexpr.core.labels import EXPRESSIONS
from facexpr.learn.data import Dataset, load_ferplus, load_layout
from facexpr.learn.train import train
from facexpr.model.classifier import ModelCard, Scores, load_classifier
from tests.layouts import ferplus_csv, make_layout, tiny_recipe


def test_train_writes_model_card_and_curve(tmp_path):
    make_layout(tmp_path / "fer" / "train", 6)
    make_layout(tmp_path / "fer" / "val", 2, seed=1)
    make_layout(tmp_path / "relabeled", 1, seed=2)
    (tmp_path / "relabeled" / "happy" / "broken.png").write_bytes(b"not a png")
    card = train(str(tmp_path / "fer"), tmp_path / "models" / "m", relabeled_uri=str(tmp_path / "relabeled"),
                 recipe=tiny_recipe(), verbose=0)
    saved = json.loads((tmp_path / "models" / "m.json").read_text())
    assert saved == card.to_dict()
    assert card.data["train"]["counts"] == dict.fromkeys(EXPRESSIONS, 6)
    assert card.data["relabeled"]["counts"] == dict.fromkeys(EXPRESSIONS, 1)
    assert card.data["relabeled"]["skipped"] == 1
    assert card.val.n == 14 and len(card.val.confusion) == 7
    assert card.epochs == 2 and card.sections["seed"] == 1234
    assert len(card.sections["history"]["accuracy"]) == 2
    assert (tmp_path / "models" / "m.png").stat().st_size > 0
    classifier = load_classifier(tmp_path / "models" / "m.keras")
    assert classifier.version == "m" and classifier.predict(np.zeros((2, 48, 48), np.uint8)).shape == (2, 7)


def test_resume_continues_from_the_checkpoint(tmp_path, capsys):
    make_layout(tmp_path / "fer", 4)  # no train/val split: held-out fraction by seed
    out = tmp_path / "models" / "r"
    train(str(tmp_path / "fer"), out, recipe=tiny_recipe(), verbose=0)
    card = train(str(tmp_path / "fer"), out, recipe=tiny_recipe(), resume=True, verbose=0)
    assert "Resuming from epoch 2 of 2" in capsys.readouterr().out
    assert len(card.sections["history"]["accuracy"]) == 2  # nothing retrained, history kept
    with pytest.raises(DataError, match="another recipe"):
        train(str(tmp_path / "fer"), out, recipe=tiny_recipe(seed=7), resume=True, verbose=0)


def test_logit_adjustment_margins_the_rare_classes_and_resumes(tmp_path, capsys):
    """--logit-adjust τ: the loss charges a frequent class's answer more than plain cross-entropy
    and a rare class's less; a checkpoint compiled with it resumes, and the card says what it used."""
    import keras

    from facexpr.learn.train import logit_adjusted_loss

    priors = [0.5, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05]
    loss = logit_adjusted_loss()(priors, tau=1.0)
    plain = keras.losses.CategoricalCrossentropy()
    frequent, rare = np.eye(7, dtype=np.float32)[[0]], np.eye(7, dtype=np.float32)[[6]]
    p = np.full((1, 7), 1 / 7, np.float32)
    assert float(loss(frequent, p)) < float(plain(frequent, p)) < float(loss(rare, p))
    assert float(logit_adjusted_loss()(priors, tau=0.0)(rare, p)) == pytest.approx(float(plain(rare, p)))

    make_layout(tmp_path / "fer", 4)
    out = tmp_path / "models" / "la"
    train(str(tmp_path / "fer"), out, recipe=tiny_recipe(logit_adjust=1.0), verbose=0)
    card = train(str(tmp_path / "fer"), out, recipe=tiny_recipe(logit_adjust=1.0), resume=True, verbose=0)
    assert "Resuming from epoch 2 of 2" in capsys.readouterr().out
    section = card.sections["logit_adjustment"]
    assert section["tau"] == 1.0 and sum(section["priors"].values()) == pytest.approx(1.0, abs=1e-3)


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="No images found"):
        load_layout(str(tmp_path / "nothing"))


def test_train_cli_takes_the_widths_and_refuses_nonsense(tmp_path, monkeypatch, capsys):
    from facexpr import cli

    seen = {}

    def fake_train(data, out, relabeled_uri, recipe, resume, loader_workers):  # the CLI's part only
        seen["recipe"], seen["workers"] = recipe, loader_workers
        return ModelCard(name="m", val=Scores(n=1, accuracy=0.5, macro_f1=0.5), epochs=recipe.epochs,
                         wall_time_s=1.0)

    monkeypatch.setattr("facexpr.learn.train.train", fake_train)
    assert cli.main(["train", "--data", str(tmp_path), "--relabeled", "", "--widths", "8,16,32",
                     "--epochs", "3", "--out", str(tmp_path / "m")]) == 0
    assert seen["recipe"].widths == (8, 16, 32) and seen["recipe"].epochs == 3
    assert seen["recipe"].ferplus is None and seen["recipe"].init_from is None
    assert seen["recipe"].augment == "standard" and seen["workers"] == 1

    assert cli.main(["train", "--data", str(tmp_path), "--relabeled", "", "--augment", "photo",
                     "--precision", "float32", "--loader-workers", "4", "--out", str(tmp_path / "m")]) == 0
    assert (seen["recipe"].augment, seen["recipe"].precision, seen["workers"]) == ("photo", "float32", 4)

    assert cli.main(["train", "--data", str(tmp_path), "--relabeled", "", "--ferplus", "votes.csv",
                     "--init-from", "models/a.keras", "--learning-rate", "0.01",
                     "--out", str(tmp_path / "m")]) == 0
    recipe = seen["recipe"]
    assert (recipe.ferplus, recipe.ferplus_weight, recipe.init_from, recipe.learning_rate) == (
        "votes.csv", 0.3, "models/a.keras", 0.01)
    with pytest.raises(SystemExit):
        cli.main(["train", "--data", str(tmp_path), "--ferplus", "votes.csv", "--ferplus-weight", "0.6"])
    assert "below 0.5" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--data", str(tmp_path), "--widths", "8,wide"])
    assert exit_.value.code == 2 and "expected positive channel counts" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--data", str(tmp_path), "--augment", "sepia"])
    assert "invalid choice: 'sepia'" in capsys.readouterr().err


def test_ferplus_votes_soften_the_targets_and_leave_out_non_faces(tmp_path):
    votes = load_ferplus(ferplus_csv(tmp_path / "ferplus.csv", {
        0: {"happiness": 10},                 # people agree with FER2013's "happy"
        1: {"sadness": 5, "neutral": 5},      # half of them saw neutral in this "sad" face
        2: {"NF": 8, "neutral": 2},           # not a face
        3: {"contempt": 10},                  # no FER2013 class among the votes
    }))
    keys = ["happy/00000.png", "sad/00001.png", "angry/00002.png", "fear/00003.png", "angry/3f9a.png"]
    labels = np.array([3, 4, 0, 2, 0])
    data = Dataset(np.zeros((5, 48, 48), np.uint8), labels, "test", keys=keys)
    targets, keep, matched = votes.targets(data, weight=0.3)
    assert keep.tolist() == [0, 1, 3, 4] and matched == 2
    np.testing.assert_allclose(targets[0], np.eye(7)[3])
    np.testing.assert_allclose(targets[1][[4, 6]], [0.85, 0.15])  # sad keeps the most weight
    assert targets[1].argmax() == 4 and targets.sum(1) == pytest.approx(np.ones(5))
    np.testing.assert_allclose(targets[[3, 4]], np.eye(7)[[2, 0]])  # unmatched: the label as given


def test_a_file_that_is_not_ferplus_is_refused(tmp_path):
    (tmp_path / "x.csv").write_text("emotion,pixels,Usage\n0,1 2,Training\n")
    with pytest.raises(DataError, match="not a FER\\+ label file"):
        load_ferplus(str(tmp_path / "x.csv"))
    with pytest.raises(DataError, match="line 2"):
        load_ferplus(ferplus_csv(tmp_path / "bad.csv", {0: {"happiness": "many"}}))


def test_training_with_ferplus_records_what_it_used(tmp_path):
    make_layout(tmp_path / "fer" / "train", 6)  # images 000..005 in every class
    make_layout(tmp_path / "fer" / "val", 2, seed=1)
    csv_path = ferplus_csv(tmp_path / "ferplus.csv", {0: {"NF": 10}, 1: {"neutral": 10}})
    card = train(str(tmp_path / "fer"), tmp_path / "models" / "f", relabeled_uri=None,
                 recipe=tiny_recipe(ferplus=csv_path, ferplus_weight=0.2), verbose=0)
    assert card.data["ferplus"] == {"source": csv_path, "weight": 0.2, "matched": 7,
                                       "left_out_not_a_face": 7}
    assert card.data["train"]["counts"] == dict.fromkeys(EXPRESSIONS, 5)
    assert card.sections["recipe"]["ferplus_weight"] == 0.2


def test_a_warm_restart_starts_from_the_given_model(tmp_path):
    make_layout(tmp_path / "fer" / "train", 6)
    make_layout(tmp_path / "fer" / "val", 2, seed=1)
    first = tmp_path / "models" / "first"
    train(str(tmp_path / "fer"), first, recipe=tiny_recipe(), verbose=0)
    again = train(str(tmp_path / "fer"), tmp_path / "models" / "again", verbose=0,
                  recipe=tiny_recipe(epochs=0, init_from=str(first) + ".keras"))
    assert again.sections["init_from"]["model"] == "first" and again.sections["init_from"]["epochs"] == 2
    crops = load_layout(str(tmp_path / "fer" / "val")).images
    np.testing.assert_allclose(load_classifier(tmp_path / "models" / "again.keras").predict(crops),
                               load_classifier(first.with_suffix(".keras")).predict(crops), atol=1e-6)
    with pytest.raises(DataError, match="pass the --widths it was trained with"):
        train(str(tmp_path / "fer"), tmp_path / "models" / "wide", verbose=0,
              recipe=tiny_recipe(widths=(4, 8, 16), init_from=str(first) + ".keras"))


def test_a_teacher_softens_the_fer2013_targets_by_its_answers(tmp_path):
    """--teacher M --teacher-weight W: each FER2013 face's target is (1 − W) × its label + W × what M
    answers on it as served (distillation); relabeled faces keep the label a person gave."""
    from facexpr.learn.targets import with_teacher

    make_layout(tmp_path / "fer" / "train", 6)
    make_layout(tmp_path / "fer" / "val", 2, seed=1)
    make_layout(tmp_path / "relabeled", 1, seed=2)
    teacher = tmp_path / "models" / "teacher"
    train(str(tmp_path / "fer"), teacher, recipe=tiny_recipe(), verbose=0)
    faces = load_layout(str(tmp_path / "fer" / "train"))
    answers = load_classifier(teacher.with_suffix(".keras")).predict(faces.images)
    targets, used = with_teacher(faces.images, faces.one_hot(), str(teacher) + ".keras", 0.7)
    np.testing.assert_allclose(targets, 0.3 * faces.one_hot() + 0.7 * answers, atol=1e-6)
    assert used["agrees_with_label"] == pytest.approx((answers.argmax(1) == faces.labels).mean(), abs=1e-4)

    student = train(str(tmp_path / "fer"), tmp_path / "models" / "student", verbose=0,
                    relabeled_uri=str(tmp_path / "relabeled"),
                    recipe=tiny_recipe(teacher=str(teacher) + ".keras", teacher_weight=0.7))
    assert student.data["teacher"]["model"] == "teacher" and student.data["teacher"]["weight"] == 0.7
    assert student.data["relabeled"]["counts"] == dict.fromkeys(EXPRESSIONS, 1)
    with pytest.raises(DataError, match="Cannot load the teacher"):
        with_teacher(faces.images, faces.one_hot(), str(tmp_path / "none.keras"), 0.7)


def test_pack_keeps_images_labels_keys_and_ferplus_votes(tmp_path, capsys):
    from facexpr import cli
    from facexpr.learn.data import load_packed

    make_layout(tmp_path / "fer" / "train", 3)
    make_layout(tmp_path / "fer" / "val", 2, seed=1)
    csv_path = ferplus_csv(tmp_path / "ferplus.csv", {0: {"NF": 10}, 1: {"neutral": 6, "sadness": 4}})
    out = tmp_path / "packed" / "fer.npz"
    assert cli.main(["pack", "--data", str(tmp_path / "fer"), "--ferplus", csv_path, "--out", str(out)]) == 0
    assert "train 21  val 14  ferplus_rows 2" in capsys.readouterr().out
    train_set, val_set = load_packed(out)
    original = load_layout(str(tmp_path / "fer" / "train"))
    np.testing.assert_array_equal(train_set.images, original.images)
    np.testing.assert_array_equal(train_set.labels, original.labels)
    assert train_set.keys == original.keys and len(val_set) == 14
    from_csv, from_pack = load_ferplus(csv_path), load_ferplus(str(out))
    assert from_pack.not_face == from_csv.not_face == {0}
    np.testing.assert_array_equal(from_pack.votes[1], from_csv.votes[1])
    assert not list(out.parent.glob("*.tmp*"))  # written whole under its name, nothing else left


def test_a_file_that_is_not_a_pack_is_refused(tmp_path):
    from facexpr.learn.data import load_packed, pack_dataset

    np.savez_compressed(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DataError, match="not a facexpr pack"):
        load_packed(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="Cannot read packed data"):
        train(str(tmp_path / "junk.npz"), tmp_path / "m", recipe=tiny_recipe(), verbose=0)
    make_layout(tmp_path / "fer" / "train", 1)
    make_layout(tmp_path / "fer" / "val", 1, seed=1)
    pack_dataset(str(tmp_path / "fer"), tmp_path / "plain.npz")
    with pytest.raises(DataError, match="packed without FER\\+ votes"):
        load_ferplus(str(tmp_path / "plain.npz"))


# Trains from a pack on Keras' JAX backend with TensorFlow made unimportable, as on a GPU machine
# that has no TensorFlow; the test process then serves the model with TensorFlow.
JAX_TRAINING = """
import sys

class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ImportError("TensorFlow is not used on this path")

sys.meta_path.insert(0, NoTensorFlow())
from facexpr.learn.train import Recipe, train
recipe = Recipe(epochs=2, batch_size=16, widths=(4, 8), precision="float32", augment=sys.argv[3])
card = train(sys.argv[1], sys.argv[2], recipe=recipe, verbose=0)
assert card.sections["machine"]["backend"] == "jax" and "tensorflow" not in sys.modules
"""


def test_training_runs_on_jax_without_tensorflow_and_serves_on_tensorflow(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("jax")
    from facexpr.learn.data import pack_dataset

    make_layout(tmp_path / "fer" / "train", 6)
    make_layout(tmp_path / "fer" / "val", 2, seed=1)
    pack_dataset(str(tmp_path / "fer"), tmp_path / "fer.npz")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", JAX_TRAINING, str(tmp_path / "fer.npz"),
                           str(tmp_path / "models" / "j"), "photo"], env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    card = json.loads((tmp_path / "models" / "j.json").read_text())
    assert card["augmentation"]["kind"] == "photo"
    assert card["data"]["train"]["source"] == str(tmp_path / "fer.npz")
    assert card["machine"]["jax"] and "tensorflow" not in card["machine"]
    classifier = load_classifier(tmp_path / "models" / "j.keras")  # this process: TensorFlow
    val = load_layout(str(tmp_path / "fer" / "val"))
    # The card's val figures (Keras on JAX) are what the served model gets here.
    assert card["val"]["accuracy"] == pytest.approx(
        float((classifier.predict(val.images).argmax(1) == val.labels).mean()), abs=1e-4)


def framed_faces() -> np.ndarray:
    """The astronaut's face cut five ways as a detector might have (looser, tighter, off-centre,
    tilted), each shrunk to 48×48 as FER2013's faces were."""
    from PIL import Image

    from tests.conftest import FIXTURES

    photo = Image.open(FIXTURES / "astronaut.jpg").convert("L")
    cx, cy, side = 176 + 49, 75 + 49, 98
    crops = []
    for scale, dx, dy, angle in [(1.2, 0, 0, 0), (1.5, 0, 0, 0), (1.1, 0.12, -0.08, 0), (1.3, -0.1, 0.1, 0),
                                 (1.3, 0, 0, 12)]:
        half = scale * side / 2
        x, y = cx + dx * side, cy + dy * side
        tilted = photo.rotate(angle, center=(cx, cy), resample=Image.Resampling.BILINEAR)
        box = (round(x - half), round(y - half), round(x + half), round(y + half))
        crops.append(np.asarray(tilted.crop(box).resize((48, 48), Image.Resampling.BOX)))
    return np.stack(crops)


def test_aligned_copies_frame_every_face_the_same_way():
    """--aligned-share trains on FER2013 faces cut as photos are: however a face was framed, its
    aligned copy puts the eyes and mouth on the template, so the five framings come out alike."""
    from facexpr.learn.align_data import aligned_copies

    faces = framed_faces()
    aligned, found = aligned_copies(faces)
    assert found.all() and aligned.shape == faces.shape and aligned.dtype == np.uint8

    def spread(images: np.ndarray) -> float:  # mean pixel difference between every pair
        x = images.astype(float)
        return float(np.mean([np.abs(a - b).mean() for i, a in enumerate(x) for b in x[i + 1:]]))

    assert spread(aligned) < 0.6 * spread(faces)
    blank = np.full((2, 48, 48), 128, np.uint8)  # no face: kept as it was
    kept, none = aligned_copies(blank)
    assert not none.any() and (kept == blank).all()


def test_training_on_a_share_of_aligned_faces_records_it(tmp_path):
    from PIL import Image

    make_layout(tmp_path / "fer" / "train", 4)
    make_layout(tmp_path / "fer" / "val", 1, seed=1)
    for i, face in enumerate(framed_faces()):
        Image.fromarray(face).save(tmp_path / "fer" / "train" / "happy" / f"astronaut{i}.png")
    card = train(str(tmp_path / "fer"), tmp_path / "models" / "al", recipe=tiny_recipe(aligned_share=0.5),
                 verbose=0)
    assert card.data["train"]["aligned"] == {"share": 0.5, "found": 5, "of": 33}
    assert card.sections["recipe"]["aligned_share"] == 0.5
