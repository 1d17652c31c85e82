"""Datasets in the image layout `<root>/<expression>/<name>.png`, from a local folder or S3.

Both locations are read through the `store` interface, so training treats FER2013 and
people's relabeled images the same way.
"""

from __future__ import annotations

import csv
import io
import lzma
import os
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from facexpr.core.errors import DataError, FacexprError
from facexpr.core.labels import CROP_SIZE, EXPRESSIONS, INDEX, NUM_CLASSES
from facexpr.photo.imaging import encode_png
from facexpr.storage.store import ImageStore, open_store


@dataclass
class Dataset:
    """48×48 uint8 images with FER2013-order integer labels, and where they came from."""

    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) int64
    source: str
    skipped: int = 0
    keys: list[str] = field(default_factory=list)  # `<expression>/<name>.png` per image, when known

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        per_class = np.bincount(self.labels, minlength=len(EXPRESSIONS))
        return {name: int(n) for name, n in zip(EXPRESSIONS, per_class, strict=True)}

    def one_hot(self) -> np.ndarray:
        """The labels as (N, 7) float32 training targets."""
        return np.eye(NUM_CLASSES, dtype=np.float32)[self.labels]

    def subset(self, index: np.ndarray) -> Dataset:
        """The images at INDEX (same source; keys kept when known)."""
        keys = [self.keys[i] for i in index] if self.keys else []
        return Dataset(self.images[index], self.labels[index], self.source, keys=keys)

    @staticmethod
    def concat(parts: list[Dataset], source: str) -> Dataset:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Dataset(np.zeros((0, CROP_SIZE, CROP_SIZE), np.uint8), np.zeros(0, np.int64), source)
        keys = [k for p in parts for k in p.keys] if all(p.keys for p in parts) else []
        return Dataset(np.concatenate([p.images for p in parts]),
                       np.concatenate([p.labels for p in parts]), source,
                       sum(p.skipped for p in parts), keys)


def _to_crop(data: bytes) -> np.ndarray | None:
    """A stored training image as a 48×48 gray array; None when it cannot be read."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            gray = im.convert("L")
            if gray.size != (CROP_SIZE, CROP_SIZE):
                gray = gray.resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(gray, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError):
        return None


def load_layout(uri: str, required: bool = True, workers: int = 8) -> Dataset:
    """Read every `<expression>/<name>.png` under URI (a local folder or s3://bucket/prefix).

    Folders that are not one of the seven expressions are ignored; unreadable files are
    counted in `skipped`, not fatal. With `required`, an empty location is an error.
    """
    try:
        store = open_store(uri)
        keys = layout_keys(store.list_keys())
    except FacexprError:
        raise
    except Exception as exc:
        raise DataError(f"Cannot list {uri}: {exc}") from exc
    if not keys and required:
        raise DataError(f"No images found under {uri}: expected {uri}/<expression>/<name>.png "
                        f"with <expression> one of {', '.join(EXPRESSIONS)}.")
    return read_keys(store, sorted(keys), uri, workers)


def layout_keys(keys: Iterable[str]) -> list[str]:
    """The keys of a layout that are training images: `<expression>/<name>.png`."""
    return [k for k in keys if k.split("/", 1)[0] in INDEX and k.lower().endswith(".png")]


def read_keys(store: ImageStore, keys: list[str], source: str, workers: int = 8) -> Dataset:
    """The images at KEYS of a layout (labelled by their folder), read in parallel; unreadable
    ones are counted in `skipped`."""
    with ThreadPoolExecutor(workers) as pool:
        crops = list(pool.map(lambda k: _to_crop(store.get(k)), keys))
    good = [(k, c) for k, c in zip(keys, crops, strict=True) if c is not None]
    images = np.stack([c for _, c in good]) if good else np.zeros((0, CROP_SIZE, CROP_SIZE), np.uint8)
    labels = np.array([INDEX[k.split("/", 1)[0]] for k, _ in good], dtype=np.int64)
    return Dataset(images, labels, source, skipped=len(keys) - len(good), keys=[k for k, _ in good])


def read_uri(uri: str) -> bytes:
    """One file's bytes from a local path or s3://bucket/key."""
    parent, name = str(uri).rsplit("/", 1) if "/" in str(uri) else (".", str(uri))
    try:
        return open_store(parent).get(name)
    except FacexprError:
        raise
    except Exception as exc:
        raise DataError(f"Cannot read {uri}: {exc}") from exc


# FER+ vote columns in FER2013's class order; contempt, unknown and NF have no FER2013 class.
FERPLUS_COLUMNS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")


@dataclass
class FerPlusVotes:
    """FER+ annotator votes per FER2013 row (Barsoum et al. 2016), as read from ferplus_labels.csv."""

    votes: dict[int, np.ndarray]  # row → votes for the seven FER2013 classes
    not_face: set[int]  # rows most annotators marked NF (not a face)

    def targets(self, dataset: Dataset, weight: float) -> tuple[np.ndarray, np.ndarray, int]:
        """(soft targets, rows to keep, matched) for DATASET's FER2013 images.

        target = (1 - WEIGHT) × one-hot(FER2013 label) + WEIGHT × FER+ vote share. The FER2013
        label keeps the most weight whenever WEIGHT < 0.5, so the model still learns the labels it
        is scored on; the votes say how ambiguous a face looked to people. Images named by FER2013
        row number (`<expression>/<row>.png`) are matched; others keep their one-hot label.
        Images most annotators called "not a face" are left out.
        """
        targets = dataset.one_hot()
        keep = np.ones(len(dataset), dtype=bool)
        matched = 0
        for i, key in enumerate(dataset.keys):
            stem = PurePosixPath(key).stem
            row = int(stem) if stem.isdigit() else None
            if row in self.not_face:
                keep[i] = False
                continue
            votes = self.votes.get(row) if row is not None else None
            if votes is not None and votes.sum() > 0:
                targets[i] = (1 - weight) * targets[i] + weight * votes / votes.sum()
                matched += 1
        return targets, np.flatnonzero(keep), matched


def load_ferplus(uri: str) -> FerPlusVotes:
    """Read ferplus_labels.csv (index, usage, neutral, happiness, …, contempt, unknown, NF),
    or the FER+ table inside a packed `.npz` (`pack_dataset`)."""
    if str(uri).endswith(".npz"):
        with _open_packed(uri) as packed:
            if "ferplus_rows" not in packed:
                raise DataError(f"{uri} was packed without FER+ votes (pack it with --ferplus).")
            rows, votes = packed["ferplus_rows"], packed["ferplus_votes"]
            return FerPlusVotes({int(r): v for r, v in zip(rows, votes, strict=True)},
                                {int(r) for r in packed["ferplus_not_face"]})
    text = read_uri(uri).decode("utf-8", errors="replace")
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"index", "NF", *FERPLUS_COLUMNS} <= set(reader.fieldnames):
        raise DataError(f"{uri} is not a FER+ label file (columns index, {', '.join(FERPLUS_COLUMNS)}, NF).")
    votes: dict[int, np.ndarray] = {}
    not_face: set[int] = set()
    try:
        for row in reader:
            index = int(row["index"])
            counts = np.array([float(row[c]) for c in FERPLUS_COLUMNS], dtype=np.float32)
            total = counts.sum() + sum(float(row[c] or 0) for c in ("contempt", "unknown", "NF") if c in row)
            votes[index] = counts
            if float(row["NF"]) > total / 2:
                not_face.add(index)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{uri} line {reader.line_num}: {exc}") from exc
    return FerPlusVotes(votes, not_face)


FER2013_SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


def _progress(done: int, total: int, what: str) -> None:
    """A one-line progress bar on stderr (kept off stdout so output stays parseable)."""
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done == total else ""
    print(f"\r{what} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr,
          flush=True)


def import_fer2013(csv_path: str | os.PathLike, out_uri: str, workers: int = 8) -> dict[str, dict[str, int]]:
    """Kaggle's fer2013.csv (emotion, pixels, Usage) → `<split>/<expression>/<row>.png` at OUT_URI.

    Rows are numbered from 0 (header excluded) and zero-padded to 5 digits, as in the shared copy.
    Returns counts per split and expression.
    """
    path = Path(csv_path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from exc
    if not rows or not {"emotion", "pixels", "Usage"} <= set(rows[0]):
        raise DataError(f"{path} is not Kaggle's fer2013.csv (columns emotion, pixels, Usage).")
    store = open_store(out_uri)
    counts: dict[str, dict[str, int]] = {}
    jobs = []
    for index, row in enumerate(rows):
        try:
            label = EXPRESSIONS[int(row["emotion"])]
            pixels = np.array(row["pixels"].split(), dtype=np.uint8).reshape(CROP_SIZE, CROP_SIZE)
            split = FER2013_SPLITS[row["Usage"]]
        except (ValueError, IndexError, KeyError) as exc:
            raise DataError(f"{path} row {index}: {exc}") from exc
        jobs.append((f"{split}/{label}/{index:05d}.png", pixels))
        counts.setdefault(split, dict.fromkeys(EXPRESSIONS, 0))[label] += 1
    _put_all(store, ((key, lambda p=pixels: encode_png(p)) for key, pixels in jobs), len(jobs),
             "import", workers)
    return counts


def upload_dataset(local_dir: str | os.PathLike, to_uri: str, workers: int = 8) -> dict[str, int]:
    """Copy an image layout (any `…/<expression>/<name>.png` below LOCAL_DIR) to TO_URI, same keys."""
    root = Path(local_dir)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder.")
    files = sorted(p for p in root.rglob("*.png") if p.parent.name in INDEX)
    if not files:
        raise DataError(f"No images under {root}/…/<expression>/*.png.")
    store = open_store(to_uri)
    _put_all(store, ((p.relative_to(root).as_posix(), p.read_bytes) for p in files), len(files),
             "upload", workers)
    counts = dict.fromkeys(EXPRESSIONS, 0)
    for p in files:
        counts[p.parent.name] += 1
    return counts


def _put_all(store, jobs, total: int, what: str, workers: int) -> None:
    done = 0
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(lambda job: store.put(job[0], job[1]()), jobs):
            done += 1
            if done % 200 == 0 or done == total:
                _progress(done, total, what)


PACK_FORMAT = 1


def _encode_images(images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 → LZMA bytes of each pixel minus its gradient prediction (left + up − up-left,
    mod 256): lossless, about 0.7 of the raw size for FER2013 (zlib on the raw pixels: 0.95)."""
    residual = np.diff(np.diff(images, axis=1, prepend=np.uint8(0)), axis=2, prepend=np.uint8(0))
    return np.frombuffer(lzma.compress(residual.astype(np.uint8).tobytes(), preset=6), np.uint8)


def _decode_images(blob: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    residual = np.frombuffer(lzma.decompress(blob.tobytes()), np.uint8).reshape(shape)
    # The sums wrap mod 256 in uint8, undoing the wrapped differences exactly.
    return np.cumsum(np.cumsum(residual, axis=1, dtype=np.uint8), axis=2, dtype=np.uint8)


def pack_dataset(data_uri: str, out: str | os.PathLike, ferplus_uri: str | None = None) -> dict[str, int]:
    """DATA's train/ and val/ (+ the FER+ votes) in one `.npz` (images compressed losslessly), for
    `train --data OUT` on a machine that has no copy of the layout. Returns the image count per part."""
    train, val = load_layout(f"{data_uri.rstrip('/')}/train"), load_layout(f"{data_uri.rstrip('/')}/val")
    arrays: dict[str, np.ndarray] = {"format": np.array(PACK_FORMAT)}
    for part, ds in (("train", train), ("val", val)):
        arrays[f"{part}_images"] = _encode_images(ds.images)
        arrays[f"{part}_shape"] = np.array(ds.images.shape)
        arrays[f"{part}_labels"] = ds.labels
        arrays[f"{part}_keys"] = np.array(ds.keys, dtype=np.str_)
        arrays[f"{part}_skipped"] = np.array(ds.skipped)
    if ferplus_uri:
        votes = load_ferplus(ferplus_uri)
        rows = np.array(sorted(votes.votes), dtype=np.int64)
        arrays["ferplus_rows"] = rows
        arrays["ferplus_votes"] = np.stack([votes.votes[r] for r in rows]) if len(rows) else np.zeros((0, 7))
        arrays["ferplus_not_face"] = np.array(sorted(votes.not_face), dtype=np.int64)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, **arrays)  # the images are compressed already; the rest is small
    tmp.replace(out)  # all or nothing: a half-written pack never has the final name
    return {"train": len(train), "val": len(val), **({"ferplus_rows": len(arrays["ferplus_rows"])}
                                                     if ferplus_uri else {})}


def _open_packed(uri: str | os.PathLike):
    try:
        packed = np.load(Path(uri), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read packed data {uri}: {exc}") from exc
    if "format" not in packed or int(packed["format"]) != PACK_FORMAT:
        packed.close()
        raise DataError(f"{uri} is not a facexpr pack (python -m facexpr pack).")
    return packed


def load_packed(uri: str | os.PathLike) -> tuple[Dataset, Dataset]:
    """(train, val) from a `.npz` written by `pack_dataset`."""
    with _open_packed(uri) as packed:
        parts = []
        for part in ("train", "val"):
            try:
                images = _decode_images(packed[f"{part}_images"], tuple(packed[f"{part}_shape"]))
            except (lzma.LZMAError, ValueError) as exc:
                raise DataError(f"{uri}: the {part} images cannot be decoded ({exc}).") from exc
            if images.ndim != 3 or images.shape[1:] != (CROP_SIZE, CROP_SIZE) or images.dtype != np.uint8:
                raise DataError(f"{uri}: {part} images are {images.shape} {images.dtype}, "
                                f"not (N, {CROP_SIZE}, {CROP_SIZE}) uint8.")
            parts.append(Dataset(images, packed[f"{part}_labels"].astype(np.int64), f"{uri}#{part}",
                                 int(packed[f"{part}_skipped"]), [str(k) for k in packed[f"{part}_keys"]]))
    return parts[0], parts[1]
