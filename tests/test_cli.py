"""`python -m facexpr predict / evaluate` as a user runs them."""

import json
import os
import subprocess
import sys

import numpy as np

from facexpr.cli import main
from facexpr.inference import has_native_bf16
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
    assert result["n"] == 2 and result["faces_found"] == 2
    assert set(result) >= {"accuracy", "per_class", "confusion", "faces_found"}


def test_evaluate_on_a_missing_folder_says_so(tmp_path, tiny_model_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope"), "--model", str(tiny_model_path)]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_predictions_are_recorded_in_the_history_unless_asked_not_to(tmp_path, astronaut_bytes,
                                                                      tiny_model_path, capsys):
    from facexpr.config import load_settings
    from facexpr.history import open_history

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
    assert fast["n"] == exact["n"] == 6 and fast["faces_found"] == 6
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
