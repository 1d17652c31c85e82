"""Safe decode: any image Pillow reads → an 8-bit gray numpy array, or a clear ImageError.

Limits are checked from the header before any pixel is decoded, so a pixel bomb costs nothing.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facexpr.core.errors import ImageError

MAX_BYTES = 25 * 1024 * 1024
READABLE_FORMATS = "JPEG, PNG, WebP, BMP, TIFF or GIF"
MAX_PIXELS = 40_000_000
MIN_SIDE = 8

# What facexpr.Recognizer takes: a file path, the file's bytes, a PIL image, or a numpy array
# (H×W gray, H×W×3 RGB, H×W×4 RGBA; OpenCV's BGR arrays reversed first: `img[..., ::-1]`).
ImageInput = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    """Integer or float gray pixels of any range → uint8, keeping the picture's contrast."""
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if arr.size == 0:
        return arr.astype(np.uint8)
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0 and hi <= 1.0 and arr.dtype.kind == "f":
        scaled = arr * 255.0  # float images conventionally hold 0..1
    elif lo >= 0 and hi <= 255:
        scaled = arr
    elif lo >= 0 and hi <= 65535:
        scaled = arr / 257.0  # 16-bit full range
    else:
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _gray(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _to_8bit(np.asarray(im))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        # Transparent areas become white, as a viewer shows them on a light page.
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
    return np.asarray(im.convert("L"), dtype=np.uint8)


def _bomb_error(exc: Exception, max_pixels: int) -> ImageError:
    """Pillow's own bomb guard fires at open for huge headers: say it in our limit's words."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f" is {int(found.group(1)) / 1e6:.0f} MP;" if found else " is too large to open safely;"
    return ImageError(f"The image{size} the limit is {max_pixels / 1e6:.0f} MP.")


PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def check_upload_name(name: str) -> None:
    """Refuse, in words, an upload whose name is not a photo's (the uploader lets every type
    through so that the reason can be shown on the page, not only on a file chip's hover)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ImageError("The file name has control characters in it; rename the file and try again.")
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name.rsplit("/", 1)[-1] else ""
    if suffix in (".svg", ".svgz"):
        raise ImageError(f"An SVG file is a drawing, not a photo: facexpr reads {READABLE_FORMATS}.")
    if suffix not in PHOTO_SUFFIXES:
        kind = f"a {suffix} file" if suffix else "a file without an extension"
        raise ImageError(f"This is {kind}, not a photo: facexpr reads {READABLE_FORMATS} "
                         f"({', '.join(PHOTO_SUFFIXES)}).")


def decode_gray(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to a (H, W) uint8 gray array with EXIF orientation applied.

    Animated images give their first frame. Raises ImageError for anything unreadable.
    """
    if not data:
        raise ImageError("The file is empty.")
    if len(data) > MAX_BYTES:
        raise ImageError(f"The file is {len(data) / 1e6:.0f} MB; the limit is {MAX_BYTES // 2**20} MB.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise _bomb_error(exc, max_pixels) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, TypeError, EOFError):
        kind = "an SVG drawing, " if b"<svg" in data[:4096].lower() else ""
        raise ImageError(f"This file is {kind}not an image facexpr can read "
                         f"(use {READABLE_FORMATS}).") from None
    with im:
        _check_size(*im.size, max_pixels)
        try:
            im.seek(0)
            im.load()
            try:
                # In place: an upright photo (the usual case) is then not copied whole first.
                ImageOps.exif_transpose(im, in_place=True)
            except Exception:  # a broken EXIF block should not cost the picture
                pass
            gray = _gray(im)
        except Image.DecompressionBombError as exc:
            raise _bomb_error(exc, max_pixels) from None
        except (OSError, ValueError, SyntaxError, TypeError, EOFError, IndexError, MemoryError,
                struct.error):
            raise ImageError("The image file is damaged or truncated and cannot be decoded.") from None
    if gray.ndim != 2:
        raise ImageError("The image has an unexpected shape and cannot be read as a photo.")
    return np.ascontiguousarray(gray)


def read_image_file(path: str | os.PathLike) -> bytes:
    """The bytes of PATH, or an ImageError in words (missing, a folder, unreadable)."""
    p = Path(path)
    if p.is_dir():
        raise ImageError("is a directory, not an image file.")
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise ImageError("no such file.") from None
    except OSError as exc:
        raise ImageError(f"cannot be read ({exc.strerror or exc}).") from None


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(f"The image is {width}×{height} ({width * height / 1e6:.0f} MP); "
                         f"the limit is {max_pixels / 1e6:.0f} MP.")
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"The image is {width}×{height}; a face needs at least "
                         f"{MIN_SIDE}×{MIN_SIDE} pixels.")


def gray_from_pil(im: Image.Image, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A PIL image already in memory → 8-bit gray, the same way decoded bytes become gray."""
    _check_size(*im.size, max_pixels)
    try:
        upright = ImageOps.exif_transpose(im) or im
    except Exception:  # a broken EXIF block should not cost the picture
        upright = im
    try:
        return np.ascontiguousarray(_gray(upright))
    except (OSError, ValueError, TypeError) as exc:
        raise ImageError(f"This PIL image (mode {im.mode}) cannot be read as a photo: {exc}") from None


def gray_from_array(arr: np.ndarray, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A numpy image → 8-bit gray: H×W is gray; H×W×3 is RGB and H×W×4 RGBA (transparent areas
    white), converted with the same luma weights as a decoded file. OpenCV's BGR: pass `img[..., ::-1]`.

    uint8 is taken as is; other integer or float ranges are scaled as for 16-bit and float files
    (floats in 0..1 count as 0..255).
    """
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype.kind not in "uif":
        raise ImageError(f"A numpy image must hold numbers, not {arr.dtype}.")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ImageError(f"A numpy image must be H×W (gray), H×W×3 (RGB) or H×W×4 (RGBA), "
                         f"not shape {arr.shape}.")
    _check_size(arr.shape[1], arr.shape[0], max_pixels)
    pixels = arr if arr.dtype == np.uint8 else _to_8bit(arr)
    if pixels.ndim == 2:
        return np.ascontiguousarray(pixels)
    return np.ascontiguousarray(_gray(Image.fromarray(np.ascontiguousarray(pixels),
                                                      "RGB" if pixels.shape[2] == 3 else "RGBA")))


def load_gray(image: ImageInput, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str, bytes | None]:
    """Any ImageInput → (8-bit gray, sha256, the file's bytes or None for an in-memory image).

    The sha256 is of the file's bytes (as the app records it); for an in-memory image, of its
    gray pixels and shape. A path's problems are reported with the path.
    """
    if isinstance(image, (str, os.PathLike)):
        try:
            data = read_image_file(image)
            return decode_gray(data, max_pixels), hashlib.sha256(data).hexdigest(), data
        except ImageError as exc:
            raise ImageError(f"{os.fspath(image)}: {exc}") from None
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        return decode_gray(data, max_pixels), hashlib.sha256(data).hexdigest(), data
    if isinstance(image, Image.Image):
        gray = gray_from_pil(image, max_pixels)
    elif isinstance(image, np.ndarray):
        gray = gray_from_array(image, max_pixels)
    else:
        raise ImageError(f"Cannot classify a {type(image).__name__}: pass a file path, the file's bytes, "
                         "a PIL image or a numpy array.")
    digest = hashlib.sha256(f"{gray.shape}".encode() + gray.tobytes()).hexdigest()
    return gray, digest, None


def encode_png(gray: np.ndarray) -> bytes:
    """8-bit gray array → PNG bytes (deterministic: same pixels, same bytes, same hash)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(gray, dtype=np.uint8)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpg"), (b"GIF8", "gif"), (b"BM", "bmp"),
          (b"II*\x00", "tif"), (b"MM\x00*", "tif"))


def image_extension(data: bytes) -> str:
    """File extension from the bytes themselves (an upload's name is not to be trusted)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    return "bin"
