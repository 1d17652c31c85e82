"""Thirty-odd kinds of bad (and oddly made) files through the classify page and `predict`.

Each kind is made here, in a few kB, from the one photo the tests carry. Every kind must end in
either a clear message or an answer; never a traceback, and a refused file is never stored
(no relabeled image, no outbox item, no history record).

Expectations per kind:
  error  — refused with a message containing the given words;
  same   — the photo stored another way (lossless): exactly the answer of the original JPEG;
  answer — a lossy copy of the photo: a face is found and one of the seven is answered;
  noface — a valid picture without a face: the page offers "classify the whole image";
  any    — a valid picture the detector may or may not find a face in: an answer or "no face".
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from streamlit.testing.v1 import AppTest

from facexpr.core.errors import ImageError
from facexpr.core.labels import EXPRESSIONS
from facexpr.model.predict import predict_image
from facexpr.photo.faces import find_crops
from facexpr.photo.imaging import decode_gray
from tests.conftest import FIXTURES, ROOT

PAGE = str(ROOT / "pages" / "classify.py")
NOT_AN_IMAGE = "not an image facexpr can read"
DAMAGED = "damaged or truncated"


@dataclass(frozen=True)
class Case:
    kind: str
    filename: str  # the name a person uploads it under (the extension may lie)
    data: bytes | None  # None: not a file at all (CLI only: a missing path, a directory)
    expect: str  # error | same | answer | noface | any
    words: str = ""  # for error: what the message must say
    mime: str = "image/png"


# ---------------------------------------------------------------- making the corpus

def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc & 0xFFFFFFFF)


def _png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A real, complete 1-bit PNG of WIDTH×HEIGHT (400 MP) that compresses to ~50 kB: a pixel bomb."""
    row = b"\x00" + bytes((width + 7) // 8)  # filter byte + packed zero bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    chunks = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def _jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """JPEG bytes whose frame header (SOF0/SOF2) claims WIDTH×HEIGHT: a bomb by header alone."""
    data = bytearray(jpeg)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            data[at + 5: at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
    raise AssertionError("no SOF marker in the JPEG")


def _zip_bytes() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("face.jpg", (FIXTURES / "astronaut.jpg").read_bytes()[:100])
    return buf.getvalue()


def build_corpus() -> list[Case]:
    jpeg = (FIXTURES / "astronaut.jpg").read_bytes()
    rgb_im = Image.open(io.BytesIO(jpeg)).convert("RGB")
    rgb = np.asarray(rgb_im)
    gray = decode_gray(jpeg)  # what the model's pipeline sees in the original
    gray_im = Image.fromarray(gray)
    rng = np.random.default_rng(6)
    noise = rng.integers(0, 256, (256, 256), dtype=np.uint8)
    noisy_png = _save(Image.fromarray(noise), "PNG")
    png = _save(rgb_im, "PNG")

    bad_crc = bytearray(png)
    idat = bad_crc.index(b"IDAT")
    bad_crc[idat + 4 + 20] ^= 0xFF  # flip a byte inside the compressed pixels: the CRC no longer fits

    rotated = Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_90)  # stored turned left…
    exif = Image.Exif()
    exif[0x0112] = 6  # …and tagged "turn right 90° to display": a viewer shows it upright

    frames = [rgb_im.quantize(64), Image.new("P", rgb_im.size, 0)]
    animated = io.BytesIO()
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)

    ihdr_only = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 640, 480, 8, 0, 0, 0, 0))
    svg = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
           b'<circle cx="32" cy="32" r="30" fill="gray"/></svg>')
    html = b"<!doctype html><html><body><img src='face.jpg'></body></html>"
    pdf = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    oversize = jpeg + bytes(26 * 2**20 - len(jpeg))  # a valid JPEG padded past the 25 MB limit

    return [
        # Not images at all.
        Case("empty", "empty.jpg", b"", "error", "empty", "image/jpeg"),
        Case("text", "notes.png", b"Dear diary, today I smiled.\n" * 20, "error", NOT_AN_IMAGE),
        Case("random bytes", "random.jpg", rng.bytes(4096), "error", NOT_AN_IMAGE, "image/jpeg"),
        Case("all zero bytes", "zeros.png", bytes(4096), "error", NOT_AN_IMAGE),
        Case("pdf", "scan.pdf.png", pdf, "error", NOT_AN_IMAGE),
        Case("zip", "photos.zip.jpg", _zip_bytes(), "error", NOT_AN_IMAGE, "image/jpeg"),
        Case("svg", "face.svg.png", svg, "error", NOT_AN_IMAGE),
        Case("html", "page.jpg", html, "error", NOT_AN_IMAGE, "image/jpeg"),
        Case("json", "face.json.png", json.dumps({"face": [1, 2, 3]}).encode(), "error", NOT_AN_IMAGE),
        # Broken images.
        Case("truncated jpeg", "cut.jpg", jpeg[: len(jpeg) // 2], "error", DAMAGED, "image/jpeg"),
        Case("truncated png", "cut.png", png[: len(png) // 2], "error", DAMAGED),
        Case("png with bad crc", "crc.png", bytes(bad_crc), "error", "damaged"),
        Case("png header only", "header.png", ihdr_only, "error", NOT_AN_IMAGE),
        Case("jpeg header only", "header.jpg", jpeg[:20], "error", NOT_AN_IMAGE, "image/jpeg"),
        Case("gif header only", "header.gif", b"GIF89a\x40\x00\x40\x00\x00\x00\x00", "error", NOT_AN_IMAGE,
             "image/gif"),
        # Too big or too small.
        Case("400-MP png bomb", "bomb.png", _png_bomb(), "error", "limit is 40 MP"),
        Case("450-MP jpeg header", "bomb.jpg", _jpeg_with_size(jpeg, 30_000, 15_000), "error",
             "limit is 40 MP", "image/jpeg"),
        Case("over 25 MB", "huge.jpg", oversize, "error", "the limit is 25 MB", "image/jpeg"),
        Case("1×1", "dot.png", _save(Image.new("L", (1, 1), 128), "PNG"), "error", "at least 8×8"),
        Case("3000×2", "line.png", _save(Image.new("L", (3000, 2), 128), "PNG"), "error", "at least 8×8"),
        Case("8000×8", "strip.png", _save(Image.fromarray(np.tile(np.arange(8000) % 256, (8, 1))
                                                           .astype(np.uint8)), "PNG"), "noface"),
        # The photo in every storage mode and format: the same face, the same answer.
        Case("png rgb", "photo.png", png, "same"),
        Case("rgba opaque", "photo-rgba.png", _save(rgb_im.convert("RGBA"), "PNG"), "same"),
        Case("la", "photo-la.png", _save(gray_im.convert("LA"), "PNG"), "same"),
        Case("16-bit", "photo-16.png", _save(Image.fromarray(gray.astype("<u2") * 257), "PNG"), "same"),
        Case("float tiff", "photo-float.tif", _save(Image.fromarray(gray.astype(np.float32) / 255), "TIFF"),
             "same", mime="image/tiff"),
        Case("tiff", "photo.tif", _save(rgb_im, "TIFF", compression="tiff_lzw"), "same", mime="image/tiff"),
        Case("bmp", "photo.bmp", _save(rgb_im, "BMP"), "same", mime="image/bmp"),
        Case("webp lossless", "photo.webp", _save(rgb_im, "WEBP", lossless=True), "same", mime="image/webp"),
        Case("exif-rotated", "rotated.png", _save(rotated, "PNG", exif=exif.tobytes()), "same"),
        Case("jpeg named .png", "really-a-jpeg.png", jpeg, "same"),
        Case("trailing garbage", "tail.jpg", jpeg + rng.bytes(2000), "same", mime="image/jpeg"),
        Case("cmyk jpeg", "cmyk.jpg", _save(rgb_im.convert("CMYK"), "JPEG", quality=92), "answer",
             mime="image/jpeg"),
        Case("webp lossy", "lossy.webp", _save(rgb_im, "WEBP", quality=80), "answer", mime="image/webp"),
        Case("palette gif", "photo.gif", _save(rgb_im.quantize(256), "GIF"), "answer", mime="image/gif"),
        Case("animated gif", "anim.gif", animated.getvalue(), "answer", mime="image/gif"),
        Case("rgba half transparent", "ghost.png",
             _save(Image.fromarray(np.dstack([rgb, np.full(gray.shape, 200, np.uint8)])), "PNG"), "answer"),
        Case("1-bit", "photo-1bit.png", _save(rgb_im.convert("1"), "PNG"), "any"),
        Case("upside down", "upside-down.jpg", _save(rgb_im.rotate(180), "JPEG", quality=92), "any",
             mime="image/jpeg"),
        # Valid pictures with nothing to find.
        Case("all black", "black.png", _save(Image.new("L", (320, 240), 0), "PNG"), "noface"),
        Case("noise", "noise.png", noisy_png, "any"),
        # Not a file (the command line only: the page cannot upload these).
        Case("missing path", "no-such-photo.jpg", None, "error", "no such file"),
        Case("a directory", "a-folder.jpg", None, "error", "is a folder with no images in it"),
    ]


CORPUS = build_corpus()
PAGE_CASES = [c for c in CORPUS if c.data is not None]


def test_the_corpus_has_at_least_thirty_kinds():
    assert len({c.kind for c in CORPUS}) == len(CORPUS) >= 30


# ---------------------------------------------------------------- what must be true afterwards

def history_hashes(data_dir: Path) -> set[str]:
    """image_sha256 of every history record under DATA_DIR (embedded store), if any exist."""
    found: set[str] = set()
    for db in data_dir.glob("*.sqlite3"):
        con = sqlite3.connect(db)
        try:
            for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'"):
                columns = [row[1] for row in con.execute(f"PRAGMA table_info('{table}')")]
                if "image_sha256" in columns:
                    found |= {h for (h,) in con.execute(f"SELECT image_sha256 FROM '{table}'")}
                elif "doc" in columns or "payload" in columns:  # an outbox keeps JSON documents
                    column = "doc" if "doc" in columns else "payload"
                    for (text,) in con.execute(f"SELECT {column} FROM '{table}'"):
                        found |= {part for part in str(text).replace('"', " ").split() if len(part) == 64}
        finally:
            con.close()
    return found


def stored_files(data_dir: Path) -> list[Path]:
    """Images or outbox items kept for a person's answer (history databases aside, and the review
    queue's copy of an answered face: its crop and a small gray photo, see facexpr/app/review.py)."""
    if not data_dir.exists():
        return []
    return [p for p in data_dir.rglob("*") if p.is_file() and not p.name.startswith("history")
            and "review" not in p.relative_to(data_dir).parts[:1]]


# ---------------------------------------------------------------- through the page

@pytest.fixture(scope="module")
def reference(tiny_classifier) -> dict:
    """The original JPEG's answer, single-threaded, as the page's model gives it."""
    prediction = predict_image((FIXTURES / "astronaut.jpg").read_bytes(), tiny_classifier)
    face = prediction.faces[0]
    return {"expression": face.expression, "confidence": face.confidence, "box": face.box.as_list()}


@pytest.fixture
def page(use_tiny_model) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    return at.run()


@pytest.mark.parametrize("case", PAGE_CASES, ids=[c.kind for c in PAGE_CASES])
def test_page_answers_or_refuses_in_words(case: Case, page: AppTest, reference, isolated_settings):
    page.file_uploader(key="upload").set_value((case.filename, case.data, case.mime))
    page.run()
    assert not page.exception, f"{case.kind}: the page raised"
    errors = [e.value for e in page.error]
    answers = [s.value.split(": ")[-1].lower() for s in page.subheader]
    warnings = [w.value for w in page.warning]
    if case.expect == "error":
        assert len(errors) == 1 and not answers, f"{case.kind}: expected one message, got {errors} {answers}"
        assert errors[0].startswith(case.filename + ": ")  # says which file
        assert case.words in errors[0]
        assert "Traceback" not in errors[0] and "Error(" not in errors[0]
        assert sha256_of(case.data) not in history_hashes(isolated_settings)
    else:
        assert not errors, f"{case.kind}: {errors}"
        no_face = any("No face was found" in w for w in warnings)
        if case.expect == "noface":
            assert no_face and not answers
        elif case.expect == "any":
            assert no_face or (answers and set(answers) <= set(EXPRESSIONS))
        else:
            assert answers and set(answers) <= set(EXPRESSIONS), f"{case.kind}: no answer ({warnings})"
        if case.expect == "same":
            assert answers == [reference["expression"]]
            assert f"confidence **{reference['confidence']:.0%}**" in page.markdown[0].value
        if answers:  # an answer is recorded (so the check above for refused files can fail)
            assert sha256_of(case.data) in history_hashes(isolated_settings)
    # Nothing is stored until a person confirms or corrects an answer.
    assert stored_files(isolated_settings) == []


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- through `python -m facexpr predict`

@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, tiny_model_path):
    """One `predict --json` over the whole corpus (one process: TensorFlow starts once)."""
    folder = tmp_path_factory.mktemp("corpus")
    data_dir = tmp_path_factory.mktemp("cli-data")
    paths = []
    for i, case in enumerate(CORPUS):
        path = folder / f"{i:02d}-{case.filename}"
        if case.kind == "a directory":
            path.mkdir()
        elif case.data is not None:
            path.write_bytes(case.data)
        paths.append(str(path))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FACEXPR_DATA_DIR": str(data_dir),
           "FACEXPR_MODEL": str(tiny_model_path)}
    for key in ("FACEXPR_S3_BUCKET", "FACEXPR_MONGODB_URI", "AWS_ENDPOINT_URL"):
        env.pop(key, None)
    run = subprocess.run([sys.executable, "-m", "facexpr", "predict", "--json", *paths],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    return run, dict(zip(paths, lines, strict=False)), paths, data_dir


def test_cli_reads_every_file_and_exits_2_without_a_traceback(cli_run):
    run, by_path, paths, data_dir = cli_run
    assert run.returncode == 2  # some inputs were bad; the rest were still answered
    assert "Traceback" not in run.stdout + run.stderr
    assert [line["path"] for line in by_path.values()] == paths  # one line per input, in order
    refused = {sha256_of(c.data) for c in CORPUS if c.expect == "error" and c.data}
    assert not refused & history_hashes(data_dir)
    assert stored_files(data_dir) == []


@pytest.mark.parametrize("index", range(len(CORPUS)), ids=[c.kind for c in CORPUS])
def test_cli_answers_or_refuses_each_file(index: int, cli_run, reference):
    case = CORPUS[index]
    _, by_path, paths, _ = cli_run
    line = by_path[paths[index]]
    if case.expect == "error":
        assert "faces" not in line and case.words in line["error"], line
        return
    assert "error" not in line, line
    expressions = [f["expression"] for f in line["faces"]]
    assert set(expressions) <= set(EXPRESSIONS)
    if case.expect == "noface":
        assert expressions == []
    elif case.expect in ("same", "answer"):
        assert expressions, f"{case.kind}: no face found"
    if case.expect == "same":
        face = line["faces"][0]
        assert face["expression"] == reference["expression"] and face["box"] == reference["box"]
        assert face["confidence"] == pytest.approx(reference["confidence"], abs=1e-5)


# ---------------------------------------------------------------- properties: only our own error

@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_through_preprocessing_give_crops_or_our_error(data: bytes):
    try:
        gray = decode_gray(data)
    except ImageError as exc:
        assert str(exc)
        return
    for mode in ("auto", "whole"):
        _, boxes, crops = find_crops(gray, mode)
        assert len(boxes) == len(crops)
        assert all(c.shape == (48, 48) and c.dtype == np.uint8 for c in crops)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=400)),
       st.sampled_from(["PNG", "BMP", "TIFF", "GIF", "WEBP"]))
def test_any_picture_through_preprocessing_gives_crops_or_our_error(pixels: np.ndarray, fmt: str):
    data = _save(Image.fromarray(pixels), fmt)
    try:
        gray = decode_gray(data)
    except ImageError as exc:
        assert "at least" in str(exc)  # the only reason to refuse a valid picture: too small
        assert min(pixels.shape) < 8
        return
    assert gray.shape == pixels.shape
    for mode in ("auto", "detect", "crop", "whole"):
        _, boxes, crops = find_crops(gray, mode)
        assert len(boxes) == len(crops) and all(c.shape == (48, 48) for c in crops)
        for b in boxes:  # every box lies on the picture
            assert 0 <= b.x < gray.shape[1] and 0 <= b.y < gray.shape[0] and b.w > 0 and b.h > 0
