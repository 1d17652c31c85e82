"""Safe decode: every readable image becomes 8-bit gray; everything else is a clear ImageError."""

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from facexpr.core.errors import ImageError
from facexpr.photo.imaging import decode_gray, encode_png
from tests.conftest import image_bytes

RAMP = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (32, 1))  # 32×64, left dark → right bright


def saved(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_colour_jpeg_becomes_gray_of_same_size(astronaut_bytes):
    gray = decode_gray(astronaut_bytes)
    assert gray.shape == (512, 512) and gray.dtype == np.uint8
    assert 60 < gray.mean() < 200


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "CMYK", "1", "I", "F", "I;16"])
def test_every_mode_keeps_the_picture(mode):
    base = Image.fromarray(RAMP)
    if mode == "I;16":
        im = Image.fromarray(RAMP.astype("<u2") * 257)
    elif mode == "F":
        im = Image.fromarray(RAMP.astype(np.float32) / 255.0)
    else:
        im = base.convert(mode)
    fmt = {"CMYK": "JPEG", "F": "TIFF", "I": "TIFF"}.get(mode, "PNG")
    gray = decode_gray(saved(im, fmt))
    assert gray.shape == RAMP.shape and gray.dtype == np.uint8
    # Left stays darker than right, whatever the storage mode.
    assert gray[:, :8].mean() < gray[:, -8:].mean() - 100


def test_sixteen_bit_full_range_maps_to_full_range():
    im = Image.fromarray(np.array([[0, 65535] * 8] * 16, dtype="<u2"))
    gray = decode_gray(saved(im, "PNG"))
    assert gray.min() == 0 and gray.max() == 255


def test_transparent_pixels_become_white():
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)  # fully transparent black
    assert decode_gray(image_bytes(rgba)).min() == 255


def test_exif_orientation_is_applied():
    im = Image.fromarray(np.zeros((20, 40), dtype=np.uint8))  # 40 wide, 20 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    gray = decode_gray(saved(im, "JPEG", exif=exif.tobytes()))
    assert gray.shape == (40, 20)


def test_animated_gif_gives_first_frame():
    frames = [Image.fromarray(np.full((16, 16), v, dtype=np.uint8)) for v in (10, 240)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert decode_gray(buf.getvalue()).mean() < 50


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"hello, this is a text file\n", "not an image"),
    (bytes(range(256)) * 8, "not an image"),
    (b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", "not an image"),
])
def test_non_images_are_refused_in_words(data, words):
    with pytest.raises(ImageError, match=words):
        decode_gray(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_refused(fmt):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    data = image_bytes(noise, fmt)
    with pytest.raises(ImageError, match="damaged or truncated"):
        decode_gray(data[: len(data) // 2])


def test_pixel_bomb_is_refused_before_decoding():
    bomb = saved(Image.new("1", (8000, 6000)), "PNG")  # 48 MP in a few kB
    assert len(bomb) < 100_000
    with pytest.raises(ImageError, match="limit is 40 MP"):
        decode_gray(bomb)


def test_png_with_bad_crc_is_refused():
    data = bytearray(image_bytes(RAMP))
    idat = data.index(b"IDAT")
    data[idat + 4] ^= 0xFF  # corrupt compressed data; CRC no longer matches
    with pytest.raises(ImageError):
        decode_gray(bytes(data))


def test_tiny_image_is_refused():
    with pytest.raises(ImageError, match="at least"):
        decode_gray(image_bytes(np.zeros((1, 1), dtype=np.uint8)))


def test_png_encoding_is_deterministic():
    assert encode_png(RAMP) == encode_png(RAMP.copy())
    assert np.array_equal(decode_gray(encode_png(RAMP)), RAMP)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_give_an_image_or_our_error(data):
    try:
        gray = decode_gray(data)
    except ImageError as exc:
        assert str(exc)
    else:
        assert gray.dtype == np.uint8 and gray.ndim == 2


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 200), st.binary(min_size=1, max_size=64))
def test_mutated_png_gives_an_image_or_our_error(offset, junk):
    data = bytearray(image_bytes(RAMP))
    data[offset: offset + len(junk)] = junk
    try:
        decode_gray(bytes(data))
    except ImageError:
        pass




def test_upload_names_that_are_not_photos_are_refused_in_words():
    from facexpr.photo.imaging import check_upload_name

    for name in ("me.jpg", "ME.JPEG", "a.b.png", "scan.tiff", "x.webp"):
        check_upload_name(name)
    for name, words in [("face.svg", "SVG file is a drawing"), ("face.exe", "a .exe file"),
                        ("noextension", "without an extension"), ("/etc/passwd", "without an extension"),
                        ("a\x00b.jpg", "control characters"), ("notes.heic", "a .heic file")]:
        with pytest.raises(ImageError, match=words):
            check_upload_name(name)
