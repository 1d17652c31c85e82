"""The LiteRT export and runtime: every saved model gets a `.tflite` checked against its `.keras`,
`load_classifier` serves it without TensorFlow when it matches the card, and falls back (or says
what to run) when it does not."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facexpr.core.errors import ModelError
from facexpr.model.classifier import Classifier, build_network, load_classifier, read_card, save_model
from facexpr.model.export import PROBE_MAX_ABS_DIFF, export_lite
from facexpr.model.lite import file_sha256, lite_path
from tests.conftest import ROOT

CROPS = np.random.default_rng(3).integers(0, 256, (70, 48, 48), dtype=np.uint8)  # > one LiteRT batch
# Makes `import tensorflow` and `import keras` fail in a fresh interpreter, as in a lean install.
NO_TF = ("import sys\nclass _NoTF:\n    def find_spec(self, name, path=None, target=None):\n"
         "        if name.split('.')[0] in ('tensorflow', 'keras'):\n"
         "            raise ImportError(f'{name} is blocked for this test')\n"
         "sys.meta_path.insert(0, _NoTF())\n")


def _python(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """A fresh interpreter on this checkout: python ARGS, in CWD, with ENV added."""
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def _copy_model(src: Path, dst_dir: Path, with_lite: bool = True) -> Path:
    dst = dst_dir / src.name
    for suffix in (".keras", ".json", *((".tflite",) if with_lite else ())):
        shutil.copy(src.with_suffix(suffix), dst.with_suffix(suffix))
    return dst


def test_saving_a_model_writes_its_checked_lite_file(tiny_model_path):
    lite = read_card(tiny_model_path).sections["lite"]
    assert lite["file"] == "tiny-test.tflite" and lite_path(tiny_model_path).is_file()
    assert lite["sha256"] == file_sha256(lite_path(tiny_model_path))
    assert lite["quantization"].startswith("int8 dynamic-range")
    assert lite["probe"]["n"] >= 64 and lite["probe"]["max_abs_diff"] <= PROBE_MAX_ABS_DIFF
    assert lite["probe"]["top1_agreement"] >= 0.97


def test_the_lite_model_answers_as_the_keras_model_does(tiny_model_path):
    lite = load_classifier(tiny_model_path)
    keras_one = load_classifier(tiny_model_path, backend="keras")
    assert (lite.backend, keras_one.backend) == ("lite", "folded")
    got, expected = lite.predict(CROPS), keras_one.predict(CROPS)
    assert got.shape == (70, 7) and np.allclose(got.sum(axis=1), 1, atol=1e-5)
    assert np.abs(got - expected).max() < PROBE_MAX_ABS_DIFF
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.97
    assert np.allclose(lite.predict(CROPS[5]), got[5:6], atol=1e-5)  # one crop = the same crop in a batch
    assert np.allclose(lite.predict(CROPS[:, :, ::-1]), got, atol=1e-5)  # flip-averaged inside the file
    # The public surface callers use is the same on both paths.
    for attribute in ("version", "geometry", "unsure_below", "card", "path"):
        assert getattr(lite, attribute) == getattr(keras_one, attribute)


def test_threads_sharing_one_lite_classifier_get_their_own_answers(tiny_classifier):
    expected = [tiny_classifier.predict(CROPS[i:i + 1 + i % 3]) for i in range(16)]
    got: dict[int, np.ndarray] = {}

    def ask(i: int) -> None:
        for _ in range(20):
            got[i] = tiny_classifier.predict(CROPS[i:i + 1 + i % 3])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(16):
        np.testing.assert_allclose(got[i], expected[i], atol=1e-6)


def test_a_lite_file_that_does_not_match_its_card_is_not_served(tiny_model_path, tmp_path):
    path = _copy_model(tiny_model_path, tmp_path)
    other = save_model(build_network(widths=(4, 8), seed=9), read_card(tiny_model_path), tmp_path / "other")
    shutil.copy(lite_path(other), lite_path(path))  # another export's file beside this model
    classifier = load_classifier(path)
    assert classifier.backend == "folded"  # the .keras answers, not the wrong file


def test_a_model_without_lite_file_still_loads_through_tensorflow(tiny_model_path, tmp_path):
    path = _copy_model(tiny_model_path, tmp_path, with_lite=False)
    assert load_classifier(path).backend == "folded"


def test_without_tensorflow_a_model_without_lite_file_says_what_to_run(tiny_model_path, tmp_path,
                                                                       monkeypatch):
    path = _copy_model(tiny_model_path, tmp_path, with_lite=False)
    for module in ("keras", "tensorflow"):
        monkeypatch.setitem(sys.modules, module, None)  # `import keras` now fails as if not installed
    with pytest.raises(ModelError) as error:
        load_classifier(path)
    message = str(error.value)
    assert "has no LiteRT file" in message and "pip install 'facexpr[train]'" in message
    assert f"facexpr export {path}" in message


def test_the_lite_path_imports_no_tensorflow(tiny_model_path, tmp_path):
    code = NO_TF + (
        "import numpy as np\nfrom facexpr.model.classifier import load_classifier\n"
        f"c = load_classifier({str(tiny_model_path)!r})\n"
        "p = c.predict(np.zeros((3, 48, 48), np.uint8))\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('tensorflow', 'keras')))\n"
        "print(c.backend, p.shape, loaded)\n")
    run = _python(["-c", code], ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "lite (3, 7) []"


def test_an_export_that_disagrees_with_keras_is_refused_and_writes_nothing(tmp_path, monkeypatch):
    from facexpr.model import export

    network = build_network(widths=(4, 8))
    wrong = build_network(widths=(4, 8))
    weights = network.get_weights()
    weights[-2] = -20 * weights[-2]  # the logits turned round and sharpened: another model's answers
    wrong.set_weights(weights)
    real_convert = export.convert
    monkeypatch.setattr(export, "convert", lambda net: real_convert(wrong))
    with pytest.raises(ModelError, match="was not kept: on 256 probe crops its probabilities differ"):
        export_lite(network, tmp_path / "m.keras")
    assert not (tmp_path / "m.tflite").exists()


def _labelled_folder(root: Path, crops: np.ndarray) -> Path:
    for i, crop in enumerate(crops):
        folder = root / ("happy", "sad", "neutral")[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop).save(folder / f"{i:03d}.png")
    return root


def test_export_command_writes_the_file_and_the_val_figures_into_the_card(tiny_model_path, tmp_path):
    path = _copy_model(tiny_model_path, tmp_path, with_lite=False)
    card = json.loads(path.with_suffix(".json").read_text())
    del card["lite"]
    path.with_suffix(".json").write_text(json.dumps(card))
    val = _labelled_folder(tmp_path / "val", CROPS[:30])
    run = _python(["-m", "facexpr", "export", str(path), "--val-data", str(val)], ROOT)
    assert run.returncode == 0, run.stderr
    assert f"Wrote {lite_path(path)}" in run.stdout and "val: n=30" in run.stdout
    lite = read_card(path).sections["lite"]
    assert lite["sha256"] == file_sha256(lite_path(path))
    assert lite["val"]["n"] == 30 and lite["val"]["source"] == str(val)
    assert lite["val"]["lite_accuracy"] >= lite["val"]["keras_accuracy"] - 0.002
    assert load_classifier(path).backend == "lite"  # the card now vouches for the file


def test_export_of_something_that_is_not_a_model_is_refused_in_words(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    run = _python(["-m", "facexpr", "export", str(tmp_path / "notes.txt")], ROOT)
    assert run.returncode == 2 and "is not a .keras model file" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("command", [["train", "--data", "x"], ["export", "m.keras"],
                                     ["retrain", "--data", "x"]])
def test_commands_that_need_tensorflow_name_the_extra_when_it_is_missing(command, tmp_path):
    code = NO_TF + f"from facexpr.cli import main\nsys.exit(main({command!r}))\n"
    run = _python(["-c", code], tmp_path, FACEXPR_DATA_DIR=str(tmp_path / "d"))
    assert run.returncode == 2, run.stderr
    needed = "keras" if command[0] == "train" else "tensorflow"  # training also runs on Keras' JAX backend
    assert f"needs {needed}, which is not installed: pip install 'facexpr[train]'" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_classifier_needs_a_network_or_a_lite_model():
    with pytest.raises(ModelError, match="needs a Keras network or a LiteRT model"):
        Classifier()


def test_the_apps_retrain_job_without_tensorflow_fails_with_the_extra_to_install(monkeypatch):
    from facexpr.core.config import load_settings
    from facexpr.core.extras import MissingExtra
    from facexpr.learn.retrain import retrain

    for module in ("keras", "tensorflow"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtra, match=r"Retraining needs tensorflow, .*pip install 'facexpr\[train\]'"):
        retrain(load_settings(), "data")
