"""The app on a real MongoDB-wire server, in a real browser, through a database outage.

`streamlit run` with FACEXPR_MONGODB_URI pointing at secantusd-py on loopback (tests/mongo_wire.py),
driven by Debian's Chromium as in tests/test_e2e_browser.py. A person classifies and corrects a
photo and sees it counted on Model health; the server stops while they classify and confirm
another (the page says the history is unreachable and keeps it locally; the photo store still
works); the server comes back on the same port with its data, and the buffered writes arrive
exactly once: two documents, each with the person's answer, nothing waiting. (Run first, this
test found a prediction recorded twice when the click's rerun overlapped the page run still
waiting on the dead server; see ui.record_once.)
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from pymongo import MongoClient

from facexpr.storage.history import BUFFER_FILE, MONGO_COLLECTION, RETRY_AFTER_S, WriteBuffer
from tests.conftest import FIXTURES
from tests.mongo_wire import wire_server
from tests.test_e2e_browser import (  # noqa: F401  (browser is a fixture)
    SLOW_MS,
    STEP_MS,
    _main,
    app_server,
    browser,
    browser_page,
    correct_answer,
    go,
    metric,
)

DB = "facexpr_e2e"


def upload(page, url: str, photo) -> str:
    """Open the app, upload PHOTO, wait for the answer; return the expression shown."""
    page.goto(url)
    _main(page).get_by_text("Choose a photo").wait_for(timeout=SLOW_MS)
    page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(str(photo))
    headline = _main(page).locator("h3").first
    headline.wait_for(timeout=SLOW_MS)
    return headline.inner_text().strip().lower().split(" or ")[0]  # "Neutral or sad?": unsure


def open_model_health(page) -> None:
    go(page, "Model health")
    page.locator(".st-key-health_window").wait_for(timeout=STEP_MS)


def test_the_app_on_a_mongodb_wire_server_through_an_outage(browser, tmp_path, tiny_model_path):  # noqa: F811
    data_dir = tmp_path / "data"
    mirrored = tmp_path / "mirrored.png"  # a second photo with a face: another image, another record
    Image.fromarray(np.asarray(Image.open(FIXTURES / "astronaut.jpg"))[:, ::-1]).save(mirrored)
    with wire_server(tmp_path / "server") as server:
        env = {"FACEXPR_DATA_DIR": str(data_dir), "FACEXPR_MODEL": str(tiny_model_path),
               "FACEXPR_MONGODB_URI": server.uri, "FACEXPR_MONGODB_DB": DB}
        with app_server(tmp_path, env) as url:
            with browser_page(browser, tmp_path) as page:
                main = _main(page)
                # 1. The database is up: classify, correct, and see it counted.
                predicted = upload(page, url, FIXTURES / "astronaut.jpg")
                chosen = correct_answer(page, predicted)
                saved = main.locator("[data-testid='stAlert']", has_text=f"Saved as {chosen}")
                saved.wait_for(timeout=STEP_MS)
                open_model_health(page)
                assert metric(page, "Faces classified") == "1"
                assert metric(page, "Agreement with people") == "0%"
                assert "unreachable" not in main.inner_text()

                # 2. The server stops while the person classifies and confirms another photo.
                server.stop()
                second = upload(page, url, mirrored)
                page.get_by_role("button", name="Confirm", exact=True).click()
                confirmed = f"Confirmed as {second} in {data_dir}/relabeled/{second}/"
                main.locator("[data-testid='stAlert']", has_text=confirmed).wait_for(timeout=STEP_MS)
                kept = main.locator("[data-testid='stAlert']", has_text="kept locally").first
                kept.wait_for(timeout=STEP_MS)
                assert "unreachable" in kept.inner_text()
                assert len(WriteBuffer(data_dir / BUFFER_FILE)) >= 2  # the prediction and the answer
                open_model_health(page)
                main.locator("[data-testid='stAlert']", has_text="Database unreachable").wait_for(
                    timeout=STEP_MS)

                # 3. The server is back (same port, same data): the next read delivers the buffer.
                server.start()
                page.wait_for_timeout((RETRY_AFTER_S + 1) * 1000)  # the app waits this long to retry
                page.reload()
                page.locator(".st-key-health_window").wait_for(timeout=STEP_MS)
                assert metric(page, "Faces classified") == "2"
                assert metric(page, "Agreement with people") == "50%"
                assert "unreachable" not in main.inner_text()
                page.reload()  # and again: nothing delivered twice
                page.locator(".st-key-health_window").wait_for(timeout=STEP_MS)
                assert metric(page, "Faces classified") == "2"

        assert len(WriteBuffer(data_dir / BUFFER_FILE)) == 0
        client = MongoClient(server.uri, tz_aware=True)
        try:
            docs = list(client[DB][MONGO_COLLECTION].find({}, {"expression": 1, "feedback": 1, "source": 1}))
        finally:
            client.close()
    answers = sorted((d["expression"], d["feedback"]["label"], d["feedback"]["confirmed"]) for d in docs)
    assert answers == sorted([(predicted, chosen, False), (second, second, True)])
    assert {d["source"] for d in docs} == {"upload"}
