"""End to end in a real browser: `streamlit run` on loopback, driven by Debian's Chromium.

A person uploads a headshot, sees the label and the chart, corrects the answer, sees where the
face was stored, and finds it counted on Model health. A second run does the same while S3 and
MongoDB are unreachable: the page says so and nothing is lost.

Playwright drives the system Chromium (`/usr/bin/chromium`, installed by `.ci/run` with apt);
it never downloads a browser. Without one the tests skip, except in CI (`CI=true`), where a
missing browser fails the run. The first test saves a screenshot of each page: under its tmp
folder, or into docs/screenshots/ (the README's) with FACEXPR_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facexpr.core.labels import EXPRESSIONS
from tests.conftest import FIXTURES, ROOT, SETTING_KEYS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
README_SCREENSHOTS = ROOT / "docs" / "screenshots"
PHOTO = FIXTURES / "astronaut.jpg"
SLOW_MS = 120_000  # the first answer waits for TensorFlow to start on a busy 2-core machine
STEP_MS = 30_000


def require_browser(chromium: str = CHROMIUM) -> None:
    """Skip without a browser, except in CI (CI=true), where that fails the run."""
    reason = None
    if not Path(chromium).exists():
        reason = f"no browser at {chromium} (`apt-get install chromium`, as .ci/run does)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "playwright is not installed (requirements-dev.txt)"
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI needs the browser test: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def served_model(tiny_model_path: Path) -> Path:
    """The shipped model when there is one (real answers for the screenshots), else the tiny one."""
    from facexpr.core.errors import ModelError
    from facexpr.model.classifier import newest_model

    try:
        return newest_model()
    except ModelError:
        return tiny_model_path


@contextmanager
def app_server(tmp: Path, env: dict[str, str]) -> Iterator[str]:
    """`streamlit run streamlit_app.py` on a free loopback port; yields its URL once healthy."""
    port = _free_port()
    clean = {k: v for k, v in os.environ.items() if k not in SETTING_KEYS and not k.startswith("AWS_")}
    log_path = tmp / f"streamlit-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env={**clean, "PYTHONPATH": str(ROOT), **env}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as answer:
                    if answer.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("streamlit did not start:\n" + log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log_text = log_path.read_text(errors="replace")
    assert "Traceback" not in log_text, f"the server logged a traceback:\n{log_text[-3000:]}"


@contextmanager
def evidence_on_failure(page, folder: Path) -> Iterator[None]:
    """When a step fails, keep what the browser showed: a screenshot and the page's text."""
    try:
        yield
    except BaseException:
        page.screenshot(path=str(folder / "failure.png"), full_page=True)
        shown = page.locator("body").inner_text()
        (folder / "failure.txt").write_text(shown)
        print(f"browser evidence: {folder / 'failure.png'}, {folder / 'failure.txt'}")
        print(f"the page at {page.url} showed (where only CI's log survives):\n{shown[:3000]}")
        raise


@contextmanager
def browser_page(browser, folder: Path, width: int = 1280, height: int = 900, **options) -> Iterator:
    """A page in a fresh browser context of WIDTH × HEIGHT; what it showed is kept in FOLDER when a
    step fails, and the context is closed after."""
    context = browser.new_context(viewport={"width": width, "height": height}, **options)
    try:
        page = context.new_page()
        with evidence_on_failure(page, folder):
            yield page
    finally:
        context.close()


def _main(page):
    return page.locator("[data-testid='stMain']")


def wait_until_idle(page) -> None:
    """Until Streamlit's "running" indicator is gone: the current script run has ended."""
    page.wait_for_function(
        "() => !document.querySelector(\"[data-testid='stStatusWidgetRunningIcon'],"
        " [data-testid='stStatusWidgetRunningManIcon']\")", timeout=STEP_MS)
    page.wait_for_timeout(300)


def go(page, name: str) -> None:
    """Open the page NAME from the sidebar and wait until its title shows (every page's title starts
    with its name). CI once waited 30 s for the Learn page's text after a click made while the first
    run was still loading the model; a page that has not come is clicked again."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    link = page.locator("[data-testid='stSidebarNav']").get_by_role("link", name=name)
    title = _main(page).locator("h1", has_text=re.compile("^" + re.escape(name)))
    for _ in range(2):
        link.click()
        try:
            title.wait_for(timeout=STEP_MS)
            return
        except PlaywrightTimeout:
            wait_until_idle(page)
    link.click()
    title.wait_for(timeout=STEP_MS)


def upload_and_read_answer(page, url: str) -> str:
    """Open the app, upload the photo, wait for the answer; return the expression shown."""
    page.goto(url)
    _main(page).get_by_text("Choose a photo").wait_for(timeout=SLOW_MS)
    page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(str(PHOTO))
    headline = _main(page).locator("h3").first
    headline.wait_for(timeout=SLOW_MS)
    expression = headline.inner_text().strip().lower().split(" or ")[0]  # "Neutral or sad?": unsure
    assert expression in EXPRESSIONS
    return expression


def screenshot_whole_page(page, path: Path) -> None:
    """Streamlit scrolls inside its main pane, so a "full page" shot would stop at the window:
    grow the window to the pane's height for the shot instead."""
    size = page.viewport_size
    height = page.evaluate("document.querySelector(\"[data-testid='stMain']\").scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": min(max(size["height"], height), 4000)})
    page.wait_for_timeout(1000)  # charts lay themselves out again at the new size
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    page.set_viewport_size(size)


def metric(page, label: str) -> str:
    """The value shown under the st.metric whose label is exactly LABEL."""
    box = _main(page).get_by_test_id("stMetric").filter(
        has=page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True))
    box.wait_for(timeout=STEP_MS)
    return box.get_by_test_id("stMetricValue").inner_text().strip()


def correct_answer(page, predicted: str) -> str:
    """Choose another expression in the relabel chooser and save it; return the chosen one."""
    chosen = "surprise" if predicted != "surprise" else "neutral"
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    chooser = page.locator("[class*='st-key-relabel_label-'] input")
    option = page.get_by_role("option", name=chosen.capitalize(), exact=True)
    pane = _main(page).bounding_box()
    for _ in range(3):
        chooser.scroll_into_view_if_needed()
        # Its list opens below it: scroll the main pane (the wheel scrolls what is under the
        # pointer) so that it does not sit at the window's bottom edge.
        page.mouse.move(pane["x"] + pane["width"] / 2, pane["y"] + 200)
        page.mouse.wheel(0, 300)
        chooser.click()
        try:
            option.wait_for(timeout=5_000)
            break
        except PlaywrightTimeout:  # seen on CI: the list did not open, or closed again at once
            page.keyboard.press("Escape")
    option.click()
    save = page.locator("[class*='st-key-relabel_save-'] button")
    save.filter(has_text="Save correction").wait_for(timeout=STEP_MS)  # it read "Confirm" before
    save.click()
    return chosen


def oversize_upload_is_refused(page, url: str, folder: Path) -> None:
    """A file over the 20 MB cap (.streamlit/config.toml) is refused in the browser and by the server."""
    big = folder / "huge.jpg"
    big.write_bytes((FIXTURES / "astronaut.jpg").read_bytes() + bytes(21 * 2**20))
    page.goto(url)
    _main(page).get_by_text("Choose a photo").wait_for(timeout=SLOW_MS)
    page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(str(big))
    page.get_by_text("File must be 20.0MB or smaller").wait_for(timeout=STEP_MS)
    assert _main(page).locator("h3").count() == 0  # nothing was classified
    # A client that skips the page's check is cut off by the server before the upload lands.
    request = urllib.request.Request(f"{url}/_stcore/upload_file/session/file", data=big.read_bytes(),
                                     method="PUT", headers={"Content-Type": "application/octet-stream"})
    try:
        urllib.request.urlopen(request, timeout=60).read()
    except urllib.error.HTTPError as answer:  # a small upload gets 403 (no XSRF token): not this
        assert answer.code == 413, f"the server answered {answer.code}, not 413 Payload Too Large"
    except OSError:
        pass  # the connection was closed mid-upload
    else:
        pytest.fail("the server took a 21 MB upload")


def classify_correct_and_see_it_counted(page, url: str, data_dir: Path, shots: Path) -> tuple[str, str]:
    # 1. Upload → the label, its confidence, the marked photo and the chart of all seven.
    predicted = upload_and_read_answer(page, url)
    main = _main(page)
    assert re.search(r"confidence \d+%", main.inner_text())
    chart = main.locator("[data-testid='stVegaLiteChart']").first
    chart.wait_for(timeout=STEP_MS)
    assert chart.bounding_box()["height"] > 100
    assert main.locator("[data-testid='stImage']").count() >= 2  # the photo and the 48×48 crop
    assert main.locator("[class*='st-key-relabel_save-'] button").inner_text().strip() == "Confirm"

    # 2. Correct it → the page says where the face went, and it is there, under the new label.
    chosen = correct_answer(page, predicted)
    stored = main.locator("[data-testid='stAlert']", has_text=f"Saved as {chosen}")
    stored.wait_for(timeout=STEP_MS)
    where = re.search(r" in (/\S+/)\. ", stored.inner_text())  # the label's folder, not the file's hash
    assert where, stored.inner_text()
    assert Path(where.group(1)) == data_dir / "relabeled" / chosen
    (path,) = (data_dir / "relabeled" / chosen).glob("*.png")
    with Image.open(path) as crop:
        assert crop.size == (48, 48) and crop.mode == "L"
        assert np.asarray(crop).std() > 5  # a face, not a blank square
    main.get_by_text(f"{chosen} 1").wait_for(timeout=STEP_MS)  # "relabeled since trained" count
    screenshot_whole_page(page, shots / "classify.png")

    # 3. Model health → the face is counted, with the person's correction.
    go(page, "Model health")
    page.locator(".st-key-health_window").wait_for(timeout=STEP_MS)
    main.get_by_text("Relabels gathered").wait_for(timeout=STEP_MS)  # the last section: all is drawn
    assert metric(page, "Faces classified") == "1"
    assert metric(page, "Agreement with people") == "0%"  # the one answer was a correction
    assert main.locator("[data-testid='stVegaLiteChart']").count() >= 5
    assert "unreachable" not in main.inner_text()
    screenshot_whole_page(page, shots / "model_health.png")
    return predicted, chosen


def test_upload_correct_and_see_it_on_model_health(browser, tmp_path, tiny_model_path):
    data_dir = tmp_path / "data"
    model = served_model(tiny_model_path)
    with app_server(tmp_path, {"FACEXPR_DATA_DIR": str(data_dir), "FACEXPR_MODEL": str(model)}) as url:
        with browser_page(browser, tmp_path) as page:
            oversize_upload_is_refused(page, url, tmp_path)
            shots = README_SCREENSHOTS if os.environ.get("FACEXPR_UPDATE_SCREENSHOTS") == "1" else tmp_path
            predicted, chosen = classify_correct_and_see_it_counted(page, url, data_dir, shots)

    # Recorded once, with the person's label (the history is the embedded store under the data dir).
    from facexpr.storage.history import EMBEDDED_FILE, SqliteHistory

    history = SqliteHistory(data_dir / EMBEDDED_FILE)
    try:
        assert history.count() == 1
        answers = history.feedback_counts(None, None)
        assert [(row[2], row[3], row[4], row[5]) for row in answers] == [(predicted, chosen, False, 1)]
    finally:
        history.close()


def _closed_port() -> int:
    return _free_port()  # bound and released at once: nothing listens there


def work_through_an_outage(page, url: str) -> str:
    """Classify and correct with both services down; return all the text the person saw."""
    main = _main(page)
    # The answer is still given; the page says the history could not take it now.
    predicted = upload_and_read_answer(page, url)
    main.locator("[data-testid='stAlert']", has_text="unreachable").first.wait_for(timeout=STEP_MS)

    # The correction is kept in the local outbox, and the page says so and where it will go.
    chosen = correct_answer(page, predicted)
    queued = main.locator("[data-testid='stAlert']", has_text="outbox").first
    queued.wait_for(timeout=STEP_MS)
    assert f"s3://facexpr-e2e/relabeled/{chosen}/" in queued.inner_text()
    shown = page.locator("body").inner_text()

    # Model health says the database is unreachable instead of failing.
    go(page, "Model health")
    page.locator(".st-key-health_window").wait_for(timeout=STEP_MS)
    main.locator("[data-testid='stAlert']", has_text="unreachable").first.wait_for(timeout=STEP_MS)
    return shown + page.locator("body").inner_text()


def test_s3_and_mongodb_down_while_a_person_works(browser, tmp_path, tiny_model_path):
    data_dir = tmp_path / "data"
    secret = "e2e-SECRET-never-shown-0123456789"
    env = {"FACEXPR_DATA_DIR": str(data_dir), "FACEXPR_MODEL": str(tiny_model_path),
           "FACEXPR_S3_BUCKET": "facexpr-e2e", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}",
           "AWS_ACCESS_KEY_ID": "e2e-key-id", "AWS_SECRET_ACCESS_KEY": secret,
           "AWS_DEFAULT_REGION": "us-east-1",
           "FACEXPR_MONGODB_URI": f"mongodb://facexpr:{secret}@127.0.0.1:{_closed_port()}/"}
    with app_server(tmp_path, env) as url:
        with browser_page(browser, tmp_path) as page:
            shown = work_through_an_outage(page, url)

    assert secret not in shown  # neither the AWS key nor the password in the MongoDB URI is shown
    # Nothing lost: the face crop and the upload wait in the outbox, the history writes in its buffer.
    outbox = [p for p in (data_dir / "outbox").rglob("*") if p.is_file()]
    assert outbox, "the correction is not in the outbox"
    assert any(p.read_bytes().startswith(b"\x89PNG") for p in outbox)
    from facexpr.storage.history import BUFFER_FILE, WriteBuffer

    buffered = WriteBuffer(data_dir / BUFFER_FILE)
    try:
        assert len(buffered) >= 2  # the prediction and the person's answer
    finally:
        buffered.close()


def test_without_a_browser_ci_fails_and_a_laptop_skips(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI needs the browser test"):
        require_browser("/nonexistent/chromium")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no browser"):
        require_browser("/nonexistent/chromium")
