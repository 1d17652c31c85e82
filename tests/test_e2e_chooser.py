"""Ten photos in a row in ONE browser session: the chooser always starts from each new answer.

A person uploads ten images one after another whose answers differ and presses Confirm on each.
Every time, "True expression" must show the prediction just made (not the previous photo's), the
button must read Confirm, and the crop must land under the predicted label with the history
saying `confirmed: true`. AppTest cannot catch a stale chooser: it sets widget values on the
server side, so there is no browser holding a previous value to send back; this test has one.

The images are made here from public-domain material: the astronaut portrait (a smile), its
mirror image, 48×48 crops of other parts of that photo, and drawn faces (a mouth as a line, an
O, bared teeth; brows raised, lowered or flat), on which the shipped model answers differently.
Then some of them, a photo of two people and a file that is not a picture go through Batch.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from facexpr.core.labels import EXPRESSIONS
from tests.conftest import FIXTURES
from tests.test_e2e_browser import (  # noqa: F401 (browser is a fixture)
    SLOW_MS,
    STEP_MS,
    _main,
    app_server,
    browser,
    browser_page,
    go,
    wait_until_idle,
)


def drawn_face(mouth: str, brows: str) -> Image.Image:
    """A 48×48 drawn face (a ready crop): the mouth and brows set the expression it reads as."""
    im = Image.new("L", (192, 192), 200)
    d = ImageDraw.Draw(im)
    d.ellipse([26, 10, 166, 186], fill=150)
    for ex in (66, 126):
        d.ellipse([ex - 12, 74, ex + 12, 86], fill=250)
        d.ellipse([ex - 5, 75, ex + 5, 85], fill=20)
    left, right = {"up": ([50, 55, 82, 48], [110, 48, 142, 55]),
                   "down": ([50, 50, 82, 62], [110, 62, 142, 50]),
                   "flat": ([50, 58, 82, 58], [110, 58, 142, 58])}[brows]
    d.line(left, fill=40, width=5)
    d.line(right, fill=40, width=5)
    if mouth == "line":
        d.line([72, 145, 120, 145], fill=30, width=5)
    elif mouth == "o":
        d.ellipse([80, 125, 112, 170], fill=20)
    elif mouth == "frown":
        d.arc([66, 135, 126, 175], 200, 340, fill=30, width=6)
    elif mouth == "teeth":
        d.rectangle([70, 135, 122, 155], fill=240, outline=20, width=3)
    return im.filter(ImageFilter.GaussianBlur(2)).resize((48, 48))


def photo_region(cx: int, cy: int, side: int) -> Image.Image:
    photo = Image.open(FIXTURES / "astronaut.jpg").convert("L")
    return photo.crop((cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2)).resize((48, 48))


def ten_photos(folder: Path) -> list[Path]:
    """Ten different images; with the shipped model, neighbours get different answers."""
    photo = Image.open(FIXTURES / "astronaut.jpg")
    images = [photo, drawn_face("line", "flat"), drawn_face("o", "flat"), drawn_face("line", "up"),
              drawn_face("teeth", "down"), photo_region(40, 180, 120), ImageOps.mirror(photo),
              drawn_face("frown", "flat"), drawn_face("o", "up"), photo_region(460, 320, 60)]
    paths = []
    for n, image in enumerate(images):
        path = folder / f"photo-{n:02d}.png"
        image.save(path)
        paths.append(path)
    return paths


def chooser_value(page) -> str:
    """The expression "True expression" shows now, as the person sees it."""
    box = _main(page).locator("[class*='st-key-relabel_label'] input[role='combobox']")
    return box.input_value().strip().lower()


def batch_page_lists_every_file(page, photos: list[Path], folder: Path) -> None:
    """Some of the same images, a photo of two people and a file that is not a picture, on the Batch
    page (the README's screenshot: FACEXPR_UPDATE_SCREENSHOTS=1)."""
    import os

    from tests.test_e2e_browser import README_SCREENSHOTS, screenshot_whole_page

    pair = folder / "two-people.png"
    gray = np.asarray(Image.open(photos[0]).convert("L"))
    Image.fromarray(np.concatenate([gray, gray[:, ::-1]], axis=1)).save(pair)
    junk = folder / "notes.png"
    junk.write_text("not a picture")
    go(page, "Batch")
    main = _main(page)
    uploader = page.locator("[data-testid='stFileUploader'] input[type='file'][multiple]")
    uploader.wait_for(state="attached", timeout=STEP_MS)
    uploader.set_input_files([str(photos[0]), str(pair), *map(str, photos[1:5]), str(junk)])
    main.get_by_text("7 files, 7 faces, 1 could not be read").wait_for(timeout=SLOW_MS)
    main.locator("[data-testid='stAlert']", has_text="notes.png: This file is not an image").wait_for()
    main.locator("[data-testid='stVegaLiteChart']").wait_for(timeout=STEP_MS)
    page.mouse.move(0, 0)  # no hover toolbar over the table in the shot
    page.wait_for_timeout(3000)  # the table draws its crop images as they load
    shots = README_SCREENSHOTS if os.environ.get("FACEXPR_UPDATE_SCREENSHOTS") == "1" else folder
    screenshot_whole_page(page, shots / "batch.png")


def test_ten_photos_in_one_session_each_confirmed_under_its_prediction(browser, tmp_path):  # noqa: F811
    data_dir = tmp_path / "data"
    photos = ten_photos(tmp_path)
    # The shipped model: its answers differ across these images (a tiny untrained one's would not).
    from facexpr.model.classifier import newest_model

    env = {"FACEXPR_DATA_DIR": str(data_dir), "FACEXPR_MODEL": str(newest_model())}
    shown: list[tuple[str, str, str, Path]] = []  # (headline, chooser, button, stored path)
    with app_server(tmp_path, env) as url:
        with browser_page(browser, tmp_path) as page:
            main = _main(page)
            page.goto(url)
            main.get_by_text("Choose a photo").wait_for(timeout=SLOW_MS)
            previous = None
            for path in photos:
                page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(str(path))
                # This photo's answer is on screen once the result names its crop's latency line anew.
                main.locator("[data-testid='stAlert']", has_text="Confirmed").wait_for(state="detached",
                                                                                      timeout=STEP_MS)
                headline = main.locator("h3").first
                headline.wait_for(timeout=SLOW_MS)
                if previous is not None:
                    page.wait_for_function(
                        "prev => { const h = document.querySelector(\"[data-testid='stMain'] h3\");"
                        " return h && h.innerText.trim().toLowerCase() !== prev; }",
                        arg=previous, timeout=SLOW_MS)
                wait_until_idle(page)
                # "Neutral or fear?" when the model is unsure: the answer is the first of the two
                predicted = headline.inner_text().strip().lower().split(" or ")[0]
                assert predicted in EXPRESSIONS, predicted
                save = main.locator("[class*='st-key-relabel_save'] button")
                chooser, button = chooser_value(page), save.inner_text().strip()
                save.click()
                stored = main.locator("[data-testid='stAlert']", has_text=re.compile("Confirmed|Saved as"))
                stored.wait_for(timeout=STEP_MS)
                where = re.search(r" in (/\S+/)\. ", stored.inner_text())  # the label's folder
                assert where, stored.inner_text()
                shown.append((predicted, chooser, button, Path(where.group(1))))
                previous = predicted
            batch_page_lists_every_file(page, photos, tmp_path)

    answers = [s[0] for s in shown]
    print("shown:", *shown, sep="\n  ")
    # The set can catch a stale chooser only if answers change from photo to photo.
    assert len(set(answers)) >= 4, answers
    assert sum(a != b for a, b in zip(answers, answers[1:], strict=False)) >= 7, answers
    for n, (predicted, chooser, button, stored) in enumerate(shown):
        assert (chooser, button) == (predicted, "Confirm"), f"photo {n}: {shown[n]}"
        assert stored == data_dir / "relabeled" / predicted, f"photo {n}: {stored}"

    from facexpr.storage.history import EMBEDDED_FILE, SqliteHistory

    history = SqliteHistory(data_dir / EMBEDDED_FILE)
    try:
        assert history.count() == 10 + 7  # the ten answers, then the batch's seven faces
        docs = [history.get(str(i)) for i in range(1, 11)]
        assert {history.get(str(i))["source"] for i in range(11, 18)} == {"batch"}
    finally:
        history.close()
    assert [(d["source"], d["expression"]) for d in docs] == [("upload", a) for a in answers]
    assert all(d["feedback"]["confirmed"] is True for d in docs), [d.get("feedback") for d in docs]
    assert [d["feedback"]["label"] for d in docs] == answers
    kept = [Path(d["feedback"]["object_key"]) for d in docs]  # where each answer's crop went
    for k, a in zip(kept, answers, strict=True):
        assert k.is_file() and k.parent == data_dir / "relabeled" / a, (k, a)
    crops = sorted(p for p in (data_dir / "relabeled").rglob("*.png"))
    assert len(crops) == len(set(kept)), crops
    assert all(np.asarray(Image.open(p)).shape == (48, 48) for p in crops)
