"""In a real browser: a person works through the review queue, retrains from
the corrections in the background, lets the new model answer in shadow, settles it through the
review queue, promotes it, and rolls it back.

Same harness as tests/test_e2e_browser.py: `streamlit run` on loopback, Debian's Chromium via
Playwright (skipped without a browser, except in CI)."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from facexpr.app.review import keep_for_review
from facexpr.core.config import load_settings
from facexpr.core.types import Prediction
from facexpr.model.registry import ModelRegistry
from facexpr.photo.faces import find_crops
from facexpr.photo.imaging import decode_gray
from facexpr.storage.history import EMBEDDED_FILE, SqliteHistory
from facexpr.storage.store import open_store
from tests.conftest import FIXTURES, image_bytes
from tests.layouts import make_layout
from tests.test_e2e_browser import (  # noqa: F401
    README_SCREENSHOTS,
    STEP_MS,
    _main,
    app_server,
    browser,
    browser_page,
    go,
    screenshot_whole_page,
    wait_until_idle,
)
from tests.test_page_learn import FAST
from tests.test_retrain import add_corrections, checkerboard, registered
from tests.test_review import answer

RETRAIN_MS = 300_000
BOARDS = 7  # checkerboards classified on the Batch page after the retrain


SIDEBAR_MODEL = "[data-testid='stSidebar'] [data-testid='stCaptionContainer']"


def sidebar_model(page, expected: str | None = None) -> str:
    """The served model the sidebar names (waiting until it names EXPECTED, when given)."""
    caption = page.locator(SIDEBAR_MODEL, has_text=re.compile(r"^Model " + re.escape(expected or "")))
    caption.first.wait_for(timeout=STEP_MS)
    return caption.first.inner_text().split("·")[0].removeprefix("Model").strip()


def photo_answer(sha: str, expression: str, confidence: float, mirrored: bool) -> Prediction:
    """A made-up answer (EXPRESSION at CONFIDENCE) about a real face: the public-domain fixture
    photo, its face found and cropped as the app does, so the Review page shows a face."""
    gray = decode_gray((FIXTURES / "astronaut.jpg").read_bytes())
    gray = np.ascontiguousarray(gray[:, ::-1]) if mirrored else gray
    _, boxes, crops = find_crops(gray, "detect")
    made = answer(sha, expression, confidence, model="tiny-served")
    return replace(made, gray=gray, faces=[replace(made.faces[0], box=boxes[0], crop=crops[0])])


def test_review_retrain_promote_rollback(browser, tmp_path, tiny_model_path):  # noqa: F811
    settings = load_settings()
    registered(settings, tiny_model_path, "tiny-served")
    ModelRegistry(settings).promote("tiny-served")
    add_corrections(settings, checkerboard, "disgust", 36)
    make_layout(tmp_path / "fer" / "train", 20)
    make_layout(tmp_path / "fer" / "val", 4, seed=1)
    history = SqliteHistory(settings.data_dir / EMBEDDED_FILE)
    now = datetime.now(UTC)
    for step, (sha, expression, confidence) in enumerate((("a", "happy", 0.9), ("b", "sad", 0.3))):
        prediction = photo_answer(sha, expression, confidence, mirrored=step == 1)
        history.record(prediction, "upload", now - timedelta(minutes=10 - step))
        keep_for_review(settings, prediction)
    history.close()

    env = {"FACEXPR_DATA_DIR": str(settings.data_dir), "FACEXPR_TRAIN_DATA": str(tmp_path / "fer"),
           "FACEXPR_RETRAIN_RECIPE": json.dumps(FAST)}
    shots = README_SCREENSHOTS if os.environ.get("FACEXPR_UPDATE_SCREENSHOTS") == "1" else tmp_path
    with app_server(tmp_path, env) as url:
        with browser_page(browser, tmp_path, height=1000) as page:
            main = _main(page)
            page.goto(url)
            assert sidebar_model(page) == "tiny-served"

            # Review: the unsure face first; key 3 labels it fear, a click confirms the next.
            go(page, "Review")
            main.locator("h3", has_text="Sad").wait_for(timeout=STEP_MS)
            assert "30%" in main.inner_text()
            page.mouse.move(0, 0)  # no hover toolbar over the chart in the shot
            screenshot_whole_page(page, shots / "review.png")  # the README's (FACEXPR_UPDATE_SCREENSHOTS=1)
            fear = main.locator("[class*='st-key-review_label_fear-'] button")
            fear.wait_for(timeout=STEP_MS)  # its key is bound
            page.keyboard.press("3")  # fear, the third expression; focus is on the sidebar link
            main.locator("[data-testid='stAlert']", has_text="Saved as fear").wait_for(timeout=STEP_MS)
            main.locator("h3", has_text="Happy").wait_for(timeout=STEP_MS)
            # The next face's buttons are new widgets; a click that lands as they are bound was seen to be
            # dropped (1 run in 4 under load): click again while the face is still there.
            happy = main.locator("[class*='st-key-review_label_happy-'] button")
            confirmed = main.locator("[data-testid='stAlert']", has_text="Confirmed")
            for _ in range(3):
                wait_until_idle(page)
                if happy.count():
                    happy.click()
                try:
                    confirmed.wait_for(timeout=10_000)
                    break
                except PlaywrightTimeout:
                    continue
            confirmed.wait_for(timeout=STEP_MS)
            main.get_by_text("Nothing to review").wait_for(timeout=STEP_MS)

            # Learn: retrain in the background, watch it, promote it, roll it back.
            go(page, "Learn")
            main.get_by_text("Corrections gathered since").wait_for(timeout=STEP_MS)
            assert "38 in the store in all" in main.inner_text()  # 36 seeded + 2 from the review
            main.get_by_role("button", name="Retrain now").click()
            # The finished panel (the progress bar's last message also says "passed the guardrail").
            main.get_by_text(re.compile(r"— fine-tuned from tiny-served")).wait_for(timeout=RETRAIN_MS)
            main.locator("[data-testid='stAlert']", has_text="Passed the guardrail").wait_for(timeout=STEP_MS)
            shown = re.search(r"(retrain-\d{8}-\d{6}) — fine-tuned from tiny-served", main.inner_text())
            name = shown.group(1)
            main.get_by_role("button", name="Discard").wait_for(timeout=STEP_MS)
            page.mouse.move(0, 0)
            screenshot_whole_page(page, shots / "learn.png")
            # The new version answers in shadow now; its own Promote waits for people's answers.
            assert main.get_by_role("button", name=f"Promote {name}").is_disabled()

            # The same person classifies more of the pattern on the Batch page: the served model says
            # sad, the candidate (in shadow, never shown) disgust. Review asks about those first.
            boards = []
            for i in range(BOARDS):
                boards.append(tmp_path / f"board-{i}.png")
                boards[-1].write_bytes(image_bytes(checkerboard(np.random.default_rng(100 + i))))
            go(page, "Batch")
            uploader = page.locator("[data-testid='stFileUploader'] input[type='file'][multiple]")
            uploader.wait_for(state="attached", timeout=STEP_MS)
            uploader.set_input_files([str(b) for b in boards])
            main.get_by_text(f"{BOARDS} files, {BOARDS} faces").wait_for(timeout=STEP_MS)
            shadowed = wait_for_shadow_answers(settings, name, BOARDS)
            assert sum(shadow == "disgust" != served for served, shadow, _ in shadowed) >= 5, shadowed
            go(page, "Review")
            label_every_face(page, main, settings, "disgust")
            go(page, "Learn")
            main.get_by_text("better beyond noise").wait_for(timeout=STEP_MS)
            main.get_by_role("button", name=f"Promote {name}").click()
            assert sidebar_model(page, name) == name
            main.get_by_role("button", name="Rollback").click()
            assert sidebar_model(page, "tiny-served") == "tiny-served"

    registry = ModelRegistry(settings)
    assert registry.served() == "tiny-served" and registry.state().shadow is None
    promoted, rolled_back = registry.state().log[-2:]
    assert (promoted["action"], promoted["name"], rolled_back["action"]) == ("promote", name, "rollback")
    assert promoted["evidence"].startswith("shadow: ")  # the tally, not the offline guardrail
    labels = sorted(k.split("/")[0] for k in open_store(settings.relabeled_uri).list_keys())
    assert labels.count("fear") == 1 and labels.count("happy") == 1
    assert labels.count("disgust") == 36 + BOARDS  # the seeded corrections and the session's answers


def wait_for_shadow_answers(settings, candidate: str, n: int) -> list[tuple[str, str, str | None]]:
    """The candidate's shadow answers, once there are N (it answers in the background)."""
    history = SqliteHistory(settings.data_dir / EMBEDDED_FILE)
    try:
        deadline = datetime.now(UTC) + timedelta(milliseconds=STEP_MS)
        while len(rows := history.shadow_answers(candidate)) < n:
            assert datetime.now(UTC) < deadline, rows
            time.sleep(0.2)
        return rows
    finally:
        history.close()


def label_every_face(page, main, settings, expression: str) -> None:
    """Click EXPRESSION for each face the Review page asks about until none is left (a click that
    lands as the next face's buttons are bound was seen to be dropped: it is tried again)."""
    button = main.locator(f"[class*='st-key-review_label_{expression}-'] button")
    done = main.get_by_text("Nothing to review")
    for _ in range(4 * BOARDS):
        wait_until_idle(page)
        if done.count():
            return
        if button.count():
            button.first.click()
            page.wait_for_timeout(300)
    done.wait_for(timeout=STEP_MS)


def test_one_labeller_grows_the_shadow_tally_through_review_and_promotes(browser, tmp_path,  # noqa: F811
                                                                         tiny_model_path):
    """Issue 22: a candidate answers in shadow; people have settled 4 of the faces where it and the
    served model disagree. The Review page asks about the next disagreement before a less sure
    face; one answer there settles the rule, and the Learn page's Promote serves the candidate."""
    from tests.test_shadow import always

    settings = load_settings()
    registered(settings, tiny_model_path, "tiny-served")
    registry = ModelRegistry(settings)
    registry.promote("tiny-served")
    always(settings, "cand-neutral", "neutral")
    registry.set_shadow("cand-neutral")
    history = SqliteHistory(settings.data_dir / EMBEDDED_FILE)
    now = datetime.now(UTC)
    for i in range(4):  # settled before: the candidate was right every time
        settled = answer(f"s{i}", "sad", 0.5, model="tiny-served")
        ids = history.record(settled, "upload", now - timedelta(hours=2))
        history.attach_shadow(ids[0], "cand-neutral", "neutral", 0.9)
        history.attach_feedback(ids[0], "neutral", False, None)
    unsure = photo_answer("u", "happy", 0.2, mirrored=False)  # less sure, but they agree on it
    differs = photo_answer("d", "sad", 0.6, mirrored=True)
    for prediction, shadow in ((unsure, "happy"), (differs, "neutral")):
        ids = history.record(prediction, "upload", now - timedelta(minutes=5))
        history.attach_shadow(ids[0], "cand-neutral", shadow, 0.9)
        keep_for_review(settings, prediction)
    history.close()

    with app_server(tmp_path, {"FACEXPR_DATA_DIR": str(settings.data_dir)}) as url:
        with browser_page(browser, tmp_path, height=1000) as page:
            main = _main(page)
            page.goto(url)
            assert sidebar_model(page) == "tiny-served"
            go(page, "Learn")
            main.get_by_text("5 so far, 4 answered").wait_for(timeout=STEP_MS)  # one waits in Review
            assert main.get_by_role("button", name="Promote cand-neutral").is_disabled()
            assert "At least 1 more answered in its favour" in main.inner_text()

            go(page, "Review")
            main.locator("h3", has_text="Sad").wait_for(timeout=STEP_MS)  # the disagreement first
            assert "neutral" not in main.locator("h3").first.inner_text().lower()  # never shown
            main.locator("[class*='st-key-review_label_neutral-'] button").wait_for(timeout=STEP_MS)
            page.keyboard.press("7")  # neutral, the seventh expression
            main.locator("[data-testid='stAlert']", has_text="Saved as neutral").wait_for(timeout=STEP_MS)

            go(page, "Learn")
            main.get_by_text("better beyond noise").wait_for(timeout=STEP_MS)
            main.get_by_role("button", name="Promote cand-neutral").click()
            assert sidebar_model(page, "cand-neutral") == "cand-neutral"

    state = ModelRegistry(settings).state()
    assert state.served == "cand-neutral" and state.shadow is None
    assert state.log[-1]["evidence"].startswith("shadow: 5 right vs 0")
