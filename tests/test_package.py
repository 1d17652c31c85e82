"""`pip install` as a stranger would: a wheel built from the checkout, installed into a fresh virtual
environment outside it, answers a photo from Python, from the `facexpr` command and over HTTP.

To stay fast and offline the fresh environment reuses the already installed dependencies (a .pth
line to this environment's site-packages) and installs facexpr itself with --no-deps; that the
declared ranges admit the pinned set is checked separately. Each answer is asked of two such
environments: one with everything, and a lean one where TensorFlow, Keras, OpenCV and pandas cannot
be imported (a meta-path blocker loaded by a .pth file before anything else), as after `pip install
facexpr`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement

import facexpr
from tests.apiserver import free_port
from tests.conftest import FIXTURES, ROOT, SHIPPED_MODEL


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # A copy of the tracked files, so the build never writes into the checkout (build/, *.egg-info).
    src = out / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(out), str(src)], check=True, capture_output=True, timeout=300)
    (found,) = out.glob("facexpr-*.whl")
    return found


# Loaded at start-up in the lean environment: what only the extras bring fails to import, as if absent.
BLOCKER = """import sys


class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "cv2", "pandas"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoTensorFlow())
"""


@pytest.fixture(scope="module", params=["full", "no-tensorflow"])
def venv(request, tmp_path_factory, wheel) -> Path:
    root = tmp_path_factory.mktemp(f"venv-{request.param}") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    site = next((root / "lib").glob("python3*/site-packages"))
    (site / "reuse-installed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    if request.param == "no-tensorflow":
        (site / "_facexpr_no_tensorflow.py").write_text(BLOCKER)
        (site / "00-no-tensorflow.pth").write_text("import _facexpr_no_tensorflow\n")  # before the deps
    subprocess.run([sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)
    return root


def stranger_env(tmp_path: Path) -> dict[str, str]:
    """No PYTHONPATH, no FACEXPR_* settings but a data folder of its own."""
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "2",
            "FACEXPR_DATA_DIR": str(tmp_path / "data")}


def test_the_wheel_holds_the_package_and_the_shipped_model(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"facexpr/__init__.py", "facexpr/serve/api/app.py", "facexpr/serve/recognizer.py",
            *(f"facexpr/models/{SHIPPED_MODEL}{s}" for s in (".keras", ".json", ".tflite"))} <= names
    assert not any(n.startswith(("tests/", "pages/", "benchmarks/", "models/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "facexpr = facexpr.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    assert wheel.name == f"facexpr-{facexpr.__version__}-py3-none-any.whl"


def test_declared_ranges_admit_the_pinned_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    declared = [Requirement(r) for r in [*project["dependencies"], *extras["app"], *extras["train"],
                                         *extras["haar"]]]
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            pins[req.name] = next(iter(req.specifier)).version
    for req in declared:
        if req.marker is not None and not req.marker.evaluate():
            continue
        assert req.name in pins, f"{req.name} is a runtime dependency but not pinned in requirements.txt"
        pinned = pins[req.name]
        assert req.specifier.contains(pinned), f"{req.name}=={pinned} is outside {req.specifier}"
    opencv = next(r for r in declared if r.name == "opencv-python-headless")
    assert not opencv.specifier.contains("5.0.0")  # OpenCV 5 has no Haar CascadeClassifier
    # The base install is lean: TensorFlow and Keras come only with [train], OpenCV with [haar] or [train],
    # pandas with [app] (the Health page's frames; the API's summary is plain Python).
    base = {Requirement(r).name for r in project["dependencies"]}
    assert not base & {"tensorflow", "tensorflow-cpu", "keras", "opencv-python-headless", "pandas"}


def test_installed_copy_answers_from_python_with_no_checkout(venv, tmp_path):
    photo = str(FIXTURES / "astronaut.jpg")
    code = (f"import json, sys, facexpr; r = facexpr.Recognizer(); (f,) = r.classify({photo!r}); "
            "print(json.dumps({'file': facexpr.__file__, 'model': str(r.classifier.path), "
            "'version': r.model_version, 'expression': f.expression, 'backend': r.classifier.backend, "
            "'tensorflow': 'tensorflow' in sys.modules, 'opencv': 'cv2' in sys.modules}))")
    run = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, env=stranger_env(tmp_path),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["file"].startswith(str(venv)) and out["model"].startswith(str(venv))
    assert out["version"] == SHIPPED_MODEL and out["expression"] == "happy"
    assert out["backend"] == "lite" and out["tensorflow"] is False  # on LiteRT: TensorFlow never loaded
    assert out["opencv"] is False  # the photo path resamples with Pillow


def test_a_lean_install_names_the_extra_a_command_needs(venv, tmp_path):
    if not venv.parent.name.startswith("venv-no-tensorflow"):
        pytest.skip("TensorFlow is installed here: training would start")
    train = subprocess.run([str(venv / "bin" / "facexpr"), "train", "--data", str(tmp_path)], cwd=tmp_path,
                           env=stranger_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert train.returncode == 2 and "pip install 'facexpr[train]'" in train.stderr
    assert "Traceback" not in train.stderr
    # A model cut the old way (the Haar box) needs OpenCV: the message names its extra.
    code = ("from facexpr.core.extras import MissingExtra\nfrom facexpr.photo.detectors import get_detector\n"
            "try:\n    get_detector('haar')\nexcept MissingExtra as e:\n    print(e)")
    haar = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path,
                          env=stranger_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert "pip install 'facexpr[haar]'" in haar.stdout, haar.stderr


def test_installed_command_has_version_and_predict(venv, tmp_path):
    command = str(venv / "bin" / "facexpr")
    version = subprocess.run([command, "--version"], cwd=tmp_path, env=stranger_env(tmp_path),
                             capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == f"facexpr {facexpr.__version__}"
    predict = subprocess.run([command, "predict", "--json", "--no-record", str(FIXTURES / "astronaut.jpg")],
                             cwd=tmp_path, env=stranger_env(tmp_path), capture_output=True, text=True,
                             timeout=300)
    assert predict.returncode == 0, predict.stderr
    answer = json.loads(predict.stdout.strip().splitlines()[-1])
    assert answer["model_version"] == SHIPPED_MODEL and answer["faces"][0]["expression"] == "happy"


def test_installed_command_serves_http(venv, tmp_path):
    port = free_port()
    server = subprocess.Popen([str(venv / "bin" / "facexpr"), "serve", "--port", str(port), "--log-level",
                               "warning"], cwd=tmp_path, env=stranger_env(tmp_path),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(720):
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stdout.read().decode(errors="replace")
            subprocess.run(["sleep", "0.25"], check=True)
        photo = (FIXTURES / "astronaut.jpg").read_bytes()
        response = httpx.post(url + "/v1/predictions", files=[("file", ("a.jpg", photo, "image/jpeg"))],
                              timeout=60)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == SHIPPED_MODEL
        assert body["predictions"][0]["faces"][0]["expression"] == "happy"
        health = httpx.get(url + "/v1/health/summary?window=24h", timeout=60)  # plain Python, no pandas
        assert health.status_code == 200, health.text
        assert health.json()["predictions"] == 1 and health.json()["expressions"]["happy"] == 1
    finally:
        server.terminate()
        server.wait(timeout=30)
