"""Secrets stay secret, uploads are capped, storage keys are the server's own, labels are the seven.

The browser-level checks (a 21 MB upload refused by the running server, no secret on the page
during an outage) are in tests/test_e2e_browser.py.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from facexpr.app.ui import widget_named
from facexpr.cli import main as cli
from facexpr.core.errors import FacexprError, LabelError
from facexpr.core.labels import EXPRESSIONS, parse_label
from tests.conftest import ROOT
from tests.s3server import closed_port_url

CLASSIFY = str(ROOT / "pages" / "classify.py")
HEALTH = str(ROOT / "pages" / "model_health.py")
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY-SECRET-4711"  # the AWS secret key value
PASSWORD = "Mongo-Passw0rd-SECRET-0815"  # the password inside the MongoDB URI
AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture
def git_tree() -> None:
    if not (ROOT / ".git").exists() or _git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout")


# ---------------------------------------------------------------- never tracked

def test_secrets_file_is_ignored_and_never_tracked(git_tree):
    tracked = _git("ls-files").stdout.splitlines()
    assert ".streamlit/secrets.toml" not in tracked
    assert not [f for f in tracked if Path(f).name in ("secrets.toml", ".env", "credentials")]
    assert _git("check-ignore", "-q", ".streamlit/secrets.toml").returncode == 0
    assert ".streamlit/secrets.toml.example" in tracked  # the documented template is


def test_no_credentials_in_tracked_files(git_tree):
    # AWS access key ids, private keys, and MongoDB URIs with a real-looking password.
    pattern = r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|mongodb(\+srv)?://[^:/\s]+:[^@\s]{12,}@"
    found = _git("grep", "-n", "-I", "-E", pattern, "--", ".", ":!tests/test_security.py")
    assert found.stdout == "", f"credentials in tracked files:\n{found.stdout}"


# ---------------------------------------------------------------- never printed or shown

@pytest.fixture
def secret_settings(monkeypatch, tmp_path) -> Iterator[str]:
    """S3 and MongoDB configured with secrets, both unreachable (so error messages get printed)."""
    closed = closed_port_url()
    for key in AWS_KEYS:  # set-then-delete: monkeypatch removes them again even if the app sets them
        monkeypatch.setenv(key, "x")
        monkeypatch.delenv(key)
    monkeypatch.setenv("FACEXPR_S3_BUCKET", "facexpr-security")
    uri = f"mongodb://facexpr:{PASSWORD}@{closed.removeprefix('http://')}/"
    yield closed, uri


def all_text(at: AppTest) -> str:
    """Everything the pages sent to the browser: every element's full message, charts' data included."""
    parts: list[str] = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        children = getattr(node, "children", None) or {}
        for child in children.values():
            walk(child)

    walk(at._tree)
    return "\n".join(parts)


def test_secrets_from_secrets_toml_are_never_shown_on_the_pages(secret_settings, use_tiny_model,
                                                                 astronaut_bytes):
    closed, uri = secret_settings
    secrets = {"AWS_ACCESS_KEY_ID": "AKIDSECURITYTEST", "AWS_SECRET_ACCESS_KEY": SECRET,
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": closed, "FACEXPR_MONGODB_URI": uri}
    at = AppTest.from_file(CLASSIFY, default_timeout=60)
    at.secrets.update(secrets)
    at.run()
    at.file_uploader(key="upload").set_value(("me.jpg", astronaut_bytes, "image/jpeg")).run()
    other = "fear" if at.subheader[0].value.lower() != "fear" else "sad"
    widget_named(at.selectbox, "relabel_label").select(other)
    widget_named(at.button, "relabel_save").click().run()
    assert not at.exception
    shown = all_text(at)
    assert "outbox" in shown and "unreachable" in shown  # the outage is explained…
    health = AppTest.from_file(HEALTH, default_timeout=60)
    health.secrets.update(secrets)
    health.run()
    assert not health.exception
    shown += all_text(health)
    for secret in (SECRET, PASSWORD):  # …without the secrets
        assert secret not in shown


def test_the_command_line_never_prints_secrets(secret_settings, monkeypatch, capfd, tiny_model_path,
                                               astronaut_bytes, tmp_path):
    closed, uri = secret_settings
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSECURITYTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    monkeypatch.setenv("FACEXPR_MONGODB_URI", uri)
    photo = tmp_path / "me.jpg"
    photo.write_bytes(astronaut_bytes)
    (tmp_path / "bad.png").write_text("not a picture")

    cli(["predict", str(photo), str(tmp_path / "bad.png"), "--json", "--model", str(tiny_model_path)])
    # Queue a correction while S3 is down, then try to deliver it: the failure is reported.
    from facexpr.core.config import load_settings
    from facexpr.storage.relabel import save_crop

    saved = save_crop(load_settings(), np.full((48, 48), 120, np.uint8), "happy", predicted="sad",
                      confidence=0.4, model_version="tiny-test")
    assert saved.queued
    assert cli(["sync"]) == 2
    out = capfd.readouterr()
    printed = out.out + out.err
    assert "outbox" in printed.lower() or "failed" in printed  # it did report something
    for secret in (SECRET, PASSWORD):
        assert secret not in printed


# ---------------------------------------------------------------- upload cap

def test_uploads_are_capped_and_errors_hide_details():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    cap_mb = config["server"]["maxUploadSize"]
    assert 0 < cap_mb <= 20
    assert config["client"]["showErrorDetails"] == "none"  # no traceback ever reaches a person
    from facexpr.photo.imaging import MAX_BYTES

    assert MAX_BYTES >= cap_mb * 2**20  # what the uploader lets through, decode does not refuse by size


# ---------------------------------------------------------------- storage keys are the server's

HOSTILE_NAMES = ["../../../../tmp/evil.jpg", "..\\..\\evil.jpg", "/etc/evil.jpg", "happy/../../x.png",
                 "s3:/bucket/evil.jpg", "CON.jpg", "evil.php.jpg", "%2e%2e%2fevil.jpg", "<script>.png"]


def stored(data_dir: Path) -> list[str]:
    """Keys of everything kept for people's answers (history databases aside), relative to DATA_DIR."""
    return [p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*")
            if p.is_file() and not p.name.startswith("history")] if data_dir.exists() else []


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_file_name_never_shapes_a_storage_key(name, use_tiny_model, astronaut_bytes,
                                                        isolated_settings):
    at = AppTest.from_file(CLASSIFY, default_timeout=60).run()
    at.file_uploader(key="upload").set_value((name, astronaut_bytes, "image/jpeg")).run()
    widget_named(at.button, "relabel_save").click().run()  # confirm the answer as is
    assert not at.exception and at.success, [e.value for e in at.error]
    keys = stored(isolated_settings)
    assert keys, "nothing was stored"
    layout = (r"(relabeled/[a-z]+/[0-9a-f]{64}\.png|originals/[0-9a-f]{64}\.jpg"
              r"|review/[0-9a-f]{64}/(face-\d+|photo)\.png)(\.meta\.json)?")  # review: the queue's copy
    for key in keys:  # content hashes under the server's own layout, inside the data folder
        assert re.fullmatch(layout, key), key
    outside = [p for p in isolated_settings.parent.rglob("*") if "evil" in p.name or p.name == "x.png"]
    assert not outside


@pytest.mark.parametrize("name", ["/etc/passwd", "a\x00b.jpg", "face.exe", "noextension"])
def test_names_streamlit_refuses_store_nothing_and_reveal_nothing(name, use_tiny_model, astronaut_bytes,
                                                                  isolated_settings):
    # The uploader lets every name through; the page refuses what is not a photo's, in words.
    at = AppTest.from_file(CLASSIFY, default_timeout=60).run()
    at.file_uploader(key="upload").set_value((name, astronaut_bytes, "image/jpeg")).run()
    shown = all_text(at)
    assert "Traceback" not in shown and "site-packages" not in shown
    assert not at.subheader  # not classified
    [error] = at.error
    assert "control characters" in error.value or "not a photo" in error.value
    assert stored(isolated_settings) == []


@pytest.mark.parametrize("key", ["../evil.png", "/abs/evil.png", "happy/../../evil.png", "", "happy//x.png",
                                 "./happy/x.png"])
def test_the_store_refuses_keys_that_leave_its_root(key, tmp_path):
    from facexpr.storage.store import LocalStore

    store = LocalStore(tmp_path / "root")
    with pytest.raises(FacexprError):
        store.put(key, b"x")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


# ---------------------------------------------------------------- a label is one of the seven

@pytest.mark.parametrize("label", ["joy", "", "   ", "../happy", "happy/../../x", "happy\x00", "Happy!", "7",
                                   "contempt", "neutral; rm -rf /"])
def test_only_the_seven_labels_are_accepted(label, isolated_settings):
    with pytest.raises(LabelError, match="choose one of angry, disgust"):
        parse_label(label)
    from facexpr.core.config import load_settings
    from facexpr.storage.relabel import save_crop

    with pytest.raises(LabelError):
        save_crop(load_settings(), np.zeros((48, 48), np.uint8), label, predicted="happy", confidence=0.9,
                  model_version="m")
    assert not isolated_settings.exists() or not [p for p in isolated_settings.rglob("*") if p.is_file()]


def test_the_page_offers_exactly_the_seven(use_tiny_model, astronaut_bytes):
    at = AppTest.from_file(CLASSIFY, default_timeout=60).run()
    at.file_uploader(key="upload").set_value(("me.jpg", astronaut_bytes, "image/jpeg")).run()
    assert list(widget_named(at.selectbox, "relabel_label").options) == [e.capitalize() for e in EXPRESSIONS]


def test_the_history_refuses_other_labels(isolated_settings, tiny_classifier, astronaut_bytes):
    from facexpr.model.predict import predict_image
    from facexpr.storage.history import SqliteHistory

    history = SqliteHistory(isolated_settings / "h.sqlite3")
    try:
        (record,) = history.record(predict_image(astronaut_bytes, tiny_classifier), "upload")
        with pytest.raises(FacexprError):
            history.attach_feedback(record, "joy", False, None)
        assert "feedback" not in (history.get(record) or {}) or history.get(record)["feedback"] is None
    finally:
        history.close()
