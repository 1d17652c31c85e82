"""`python -m facexpr predict / evaluate` as a user runs them."""

import json
import os
import subprocess
import sys

import numpy as np

from facexpr.cli import main
from facexpr.model.inference import has_native_bf16
from tests.conftest import ROOT, image_bytes


def test_bad_file_among_good_ones_exits_2_and_answers_the_rest(tmp_path, astronaut_bytes, tiny_model_path):
    good = tmp_path / "face.jpg"
    good.write_bytes(astronaut_bytes)
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a picture")
    crop = tmp_path / "crop.png"
    crop.write_bytes(image_bytes(np.full((48, 48), 90, np.uint8)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "facexpr", "predict", str(good), str(bad), str(tmp_path / "missing.jpg"),
         str(crop), "--json", "--model", str(tiny_model_path)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr + run.stdout
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(good), str(bad), str(tmp_path / "missing.jpg"), str(crop)]
    face = lines[0]["faces"][0]
    assert len(lines[0]["faces"]) == 1 and len(face["box"]) == 4 and len(face["probabilities"]) == 7
    assert set(lines[0]["latency_ms"]) == {"decode", "detect", "classify", "total"}
    assert "not an image" in lines[1]["error"] and "no such file" in lines[2]["error"]
    assert lines[3]["faces"][0]["box"] == [0, 0, 48, 48]


def test_all_good_exits_0_with_readable_lines(tmp_path, astronaut_bytes, tiny_model_path, capsys):
    (tmp_path / "a.jpg").write_bytes(astronaut_bytes)
    assert main(["predict", str(tmp_path / "a.jpg"), "--model", str(tiny_model_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{tmp_path / 'a.jpg'}: ") and "%" in out and "ms)" in out


def test_faces_crop_mode_skips_detection(tmp_path, astronaut_bytes, tiny_model_path, capsys):
    (tmp_path / "a.jpg").write_bytes(astronaut_bytes)
    main(["predict", str(tmp_path / "a.jpg"), "--faces", "crop", "--json", "--model", str(tiny_model_path)])
    assert json.loads(capsys.readouterr().out)["faces"][0]["box"] == [0, 0, 512, 512]


def test_evaluate_prints_the_report_as_json(tmp_path, tiny_model_path, capsys):
    for label in ("angry", "neutral"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "x.png").write_bytes(image_bytes(np.full((48, 48), 100, np.uint8)))
    assert main(["evaluate", str(tmp_path), "--json", "--model", str(tiny_model_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 2 and result["ready_crops"] == 2 and result["faces_found"] == 0
    assert set(result) >= {"accuracy", "per_class", "confusion", "faces_found", "whole_image_fallback"}
    assert result["backend"] == "lite"  # the served LiteRT file, as every other command answers
    assert main(["evaluate", str(tmp_path), "--json", "--model", str(tiny_model_path),
                 "--precision", "float32"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "folded"  # the Keras model, through TensorFlow


def test_evaluate_on_a_missing_folder_says_so(tmp_path, tiny_model_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope"), "--model", str(tiny_model_path)]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_predictions_are_recorded_in_the_history_unless_asked_not_to(tmp_path, astronaut_bytes,
                                                                      tiny_model_path, capsys):
    from facexpr.core.config import load_settings
    from facexpr.storage.history import open_history

    (tmp_path / "a.jpg").write_bytes(astronaut_bytes)
    (tmp_path / "bad.png").write_bytes(b"junk")
    main(["predict", str(tmp_path / "a.jpg"), str(tmp_path / "bad.png"), "--model", str(tiny_model_path)])
    history = open_history(load_settings())
    assert history.count() == 1  # the one face; the bad file leaves no trace
    main(["predict", str(tmp_path / "a.jpg"), "--no-record", "--model", str(tiny_model_path)])
    assert history.count() == 1


def test_evaluate_in_bfloat16_scores_every_image_where_the_cpu_has_it(tmp_path, tiny_model_path, capsys):
    for label in ("angry", "neutral"):
        (tmp_path / label).mkdir()
        for i in range(3):
            (tmp_path / label / f"{i}.png").write_bytes(image_bytes(np.full((48, 48), 60 * i, np.uint8)))
    argv = ["evaluate", str(tmp_path), "--json", "--model", str(tiny_model_path), "--faces", "crop"]
    assert main(argv) == 0
    exact = json.loads(capsys.readouterr().out)
    if not has_native_bf16():
        assert main([*argv, "--precision", "bfloat16"]) == 2
        assert "no native bfloat16" in capsys.readouterr().err
        return
    assert main([*argv, "--precision", "bfloat16"]) == 0
    fast = json.loads(capsys.readouterr().out)
    assert fast["n"] == exact["n"] == 6 and fast["ready_crops"] == 6
    assert sum(map(sum, fast["confusion"])) == 6


def test_evaluate_can_record_its_result_in_the_model_card(tmp_path, tiny_model_path, capsys):
    import shutil

    model = tmp_path / "m.keras"
    shutil.copy(tiny_model_path, model)
    shutil.copy(tiny_model_path.with_suffix(".json"), model.with_suffix(".json"))
    data = tmp_path / "photos"
    (data / "happy").mkdir(parents=True)
    (data / "happy" / "a.png").write_bytes(image_bytes(np.full((48, 48), 90, np.uint8)))
    before = json.loads(model.with_suffix(".json").read_text())
    argv = ["evaluate", str(data), "--faces", "crop", "--model", str(model), "--add-to-card"]
    assert main([*argv, "photos"]) == 0
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["photos"]["n"] == 1 and card["photos"]["source"] == str(data)
    assert card["photos"]["command"].endswith(f"evaluate {data} --faces crop")
    card.pop("photos")
    before.pop("photos", None)
    assert card == before
    # What training wrote is not overwritten by an evaluation.
    assert main([*argv, "val"]) == 2
    assert "written by training" in capsys.readouterr().err
    assert json.loads(model.with_suffix(".json").read_text())["val"] == before["val"]


# ---- what a newcomer sees


def test_predict_prints_only_facexprs_own_output(tmp_path, astronaut_bytes, tiny_model_path):
    """TensorFlow's start-up notices (absl, oneDNN, XNNPACK) stay out of a fresh process's output."""
    photo = tmp_path / "me.jpg"
    photo.write_bytes(astronaut_bytes)
    run = subprocess.run([sys.executable, "-m", "facexpr", "predict", str(photo), "--no-record",
                          "--model", str(tiny_model_path)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    [line] = run.stdout.splitlines()
    assert line.startswith(f"{photo}: ")


def test_a_model_that_cannot_load_still_says_why(tmp_path, capsys):
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a model")
    (tmp_path / "a.png").write_bytes(image_bytes(np.full((48, 48), 90, np.uint8)))
    assert main(["predict", str(tmp_path / "a.png"), "--model", str(broken)]) == 2
    assert "error:" in capsys.readouterr().err


def test_predict_takes_the_images_in_a_folder(tmp_path, tiny_model_path, capsys):
    for name in ("b.png", "a.jpg"):
        (tmp_path / name).write_bytes(image_bytes(np.full((48, 48), 90, np.uint8),
                                                  "PNG" if name.endswith("png") else "JPEG"))
    (tmp_path / "notes.txt").write_text("not an image")
    assert main(["predict", str(tmp_path), "--no-record", "--model", str(tiny_model_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(tmp_path / "a.jpg"), str(tmp_path / "b.png")]


def test_predict_on_a_folder_without_images_says_so(tmp_path, tiny_model_path, capsys):
    (tmp_path / "notes.txt").write_text("not an image")
    assert main(["predict", str(tmp_path), "--no-record", "--model", str(tiny_model_path)]) == 2
    assert capsys.readouterr().out.startswith(f"{tmp_path}: error: is a folder with no images in it")


def test_version(capsys):
    import pytest

    from facexpr import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"facexpr {__version__}"


def test_every_option_has_help():
    from facexpr.cli import build_parser

    parser = build_parser()
    [commands] = [a for a in parser._actions if a.dest == "command"]
    missing = [f"{name} {a.dest}" for name, sub in commands.choices.items() for a in sub._actions
               if not a.help]
    assert not missing, missing


def test_evaluate_prints_the_confusion_and_f1_of_present_classes(tmp_path, tiny_model_path, capsys):
    for label in ("angry", "happy", "neutral"):
        (tmp_path / label).mkdir()
        for n in range(2):
            (tmp_path / label / f"{n}.png").write_bytes(image_bytes(np.full((48, 48), 60 * n + 40, np.uint8)))
    assert main(["evaluate", str(tmp_path), "--model", str(tiny_model_path)]) == 0
    out = capsys.readouterr().out
    assert "confusion (rows: true expression" in out
    rows = [line.split() for line in out.split("columns: predicted)\n")[1].splitlines()[1:]]
    assert [r[0] for r in rows] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert sum(int(v) for r in rows for v in r[1:]) == 6
    assert not any(line.split()[0] == "disgust" for line in out.splitlines() if "support" in line)


def test_macro_f1_is_over_the_classes_in_the_folder():
    from facexpr.learn.evaluate import report

    # 12 images of 3 classes, 9 right: per-class F1 0.75, 0.75, 0.75 → macro 0.75 (not 0.32 over seven).
    y_true = np.array([0] * 4 + [3] * 4 + [6] * 4)
    y_pred = np.array([0, 0, 0, 3, 3, 3, 3, 6, 6, 6, 6, 0])
    result = report(y_true, y_pred)
    assert result["accuracy"] == 0.75 and result["macro_f1"] == 0.75
