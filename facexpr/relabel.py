"""A person's answer to a prediction: store the face crop under its true label, never lose it.

The crop the model saw goes to the relabeled store (`<label>/<sha256 of the PNG>.png`, the
training layout) and the original upload once to a sibling `originals/` root, so a better
detector can re-crop later. When the store cannot take them (an outage, or a wrong bucket or
credentials) they go to a local outbox under `FACEXPR_DATA_DIR/outbox`, which later saves and
`python -m facexpr sync` deliver. Keys are content hashes, so retries never duplicate.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facexpr.config import Settings
from facexpr.errors import FacexprError, ImageError
from facexpr.imaging import encode_png
from facexpr.labels import EXPRESSIONS, INDEX, parse_label
from facexpr.store import (
    ImageStore,
    StoreError,
    StoreUnavailable,
    atomic_write,
    open_store,
)

if TYPE_CHECKING:
    from facexpr.predict import Prediction

RELABELED = "relabeled"  # role: the training layout
ORIGINALS = "originals"  # role: the uploads the crops came from
ROLES = (RELABELED, ORIGINALS)
CROP_SIZE = 48
FLUSH_ON_SAVE = 20  # outbox items retried after a successful save; the rest wait for `sync`


# ---------------------------------------------------------------- where things go

def originals_uri(settings: Settings) -> str:
    """The originals root: a sibling of the relabeled prefix in S3 (so training, which reads the
    relabeled root, never sees them), else `data_dir/originals`."""
    if settings.s3_bucket:
        parent = settings.s3_prefix.strip("/").rpartition("/")[0]
        return f"s3://{settings.s3_bucket}/{parent + '/' if parent else ''}{ORIGINALS}/"
    return str(Path(settings.data_dir) / ORIGINALS)


def role_uri(settings: Settings, role: str) -> str:
    return settings.relabeled_uri if role == RELABELED else originals_uri(settings)


def _now_iso(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")


def parse_time(value: str | datetime | None) -> datetime | None:
    """An ISO time (a model card's `trained_at`) as an aware UTC datetime; None when absent or unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


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


# ---------------------------------------------------------------- the outbox

@dataclass
class OutboxItem:
    id: str
    role: str  # RELABELED or ORIGINALS: resolved against the settings at delivery time, so
    #            fixing FACEXPR_S3_BUCKET and running `sync` delivers what was queued
    op: str  # "put" or "delete"
    key: str
    metadata: dict[str, str] = field(default_factory=dict)
    sha256: str = ""  # of the data, for put
    queued_at: str = ""
    reason: str = ""
    target: str = ""  # where it was headed when queued (for messages only)
    attempts: int = 0


def _item_id(role: str, key: str) -> str:
    # One entry per destination: a newer intent for the same key (put ↔ delete) replaces the older one.
    return hashlib.sha256(f"{role}\n{key}".encode()).hexdigest()


class Outbox:
    """Items waiting for the store: `<id>.json` (what and where) + `<id>.bin` (the bytes).

    The JSON is written last and removed first, so it marks a complete item; writes are atomic.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _json(self, item_id: str) -> Path:
        return self.root / f"{item_id}.json"

    def _bin(self, item_id: str) -> Path:
        return self.root / f"{item_id}.bin"

    def add(self, role: str, op: str, key: str, data: bytes | None = None,
            metadata: dict[str, str] | None = None, reason: str = "", target: str = "") -> OutboxItem:
        item = OutboxItem(id=_item_id(role, key), role=role, op=op, key=key, metadata=dict(metadata or {}),
                          sha256=hashlib.sha256(data).hexdigest() if data is not None else "",
                          queued_at=_now_iso(), reason=reason, target=target)
        try:
            if op == "put":
                atomic_write(self._bin(item.id), data or b"")
            self._write(item)
            if op != "put":
                self._bin(item.id).unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"Could not keep the item in the outbox at {self.root}: {exc.strerror or exc}. "
                             "Check that FACEXPR_DATA_DIR points at a writable folder.") from exc
        return item

    def _write(self, item: OutboxItem) -> None:
        atomic_write(self._json(item.id), json.dumps(item.__dict__, sort_keys=True).encode())

    def items(self) -> list[OutboxItem]:
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.glob("*.json"):
            item = self.get(path.stem)
            if item is not None:  # None: removed meanwhile by another process, or not ours
                found.append(item)
        return sorted(found, key=lambda i: (i.queued_at, i.id))

    def get(self, item_id: str) -> OutboxItem | None:
        try:
            return OutboxItem(**json.loads(self._json(item_id).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def __len__(self) -> int:
        return len(list(self.root.glob("*.json"))) if self.root.is_dir() else 0

    def data(self, item: OutboxItem) -> bytes:
        data = self._bin(item.id).read_bytes()
        if hashlib.sha256(data).hexdigest() != item.sha256:
            raise OSError(f"outbox item {item.id} does not match its checksum")
        return data

    def discard(self, role: str, key: str) -> None:
        """Drop a pending entry for ROLE/KEY (a newer intent for that key was carried out directly)."""
        item_id = _item_id(role, key)
        self._json(item_id).unlink(missing_ok=True)
        self._bin(item_id).unlink(missing_ok=True)

    def sweep(self, older_than_s: float = 3600) -> None:
        """Remove bytes whose `.json` is gone (a crash between the two files): with no key and no
        metadata they cannot be delivered. Young ones may belong to an `add` still under way."""
        cutoff = time.time() - older_than_s
        for path in self.root.glob("*.bin") if self.root.is_dir() else []:
            try:
                if not self._json(path.stem).exists() and path.stat().st_mtime < cutoff:
                    path.unlink()
            except OSError:
                continue

    def note_failure(self, item: OutboxItem, reason: str) -> None:
        item.attempts += 1
        item.reason = reason
        if self._json(item.id).exists():
            try:
                self._write(item)
            except OSError:
                pass  # the bookkeeping is a nicety; the item itself is intact


def outbox_for(settings: Settings) -> Outbox:
    return Outbox(Path(settings.data_dir) / "outbox")


@dataclass
class SyncReport:
    sent: int = 0
    failed: int = 0
    remaining: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # destination → the last error

    @property
    def ok(self) -> bool:
        return self.remaining == 0


def _apply(store: ImageStore, op: str, key: str, data: bytes | None, metadata: dict[str, str]) -> str:
    if op == "delete":
        store.delete(key)
    elif not store.exists(key):  # content-hash key already there: keep the first arrival's time
        store.put(key, data or b"", metadata)
    return store.location(key)


def flush_outbox(settings: Settings, limit: int | None = None) -> SyncReport:
    """Deliver queued items, oldest first. A destination that fails is not retried again in this
    round (an unreachable endpoint would otherwise cost a timeout per item)."""
    outbox = outbox_for(settings)
    report = SyncReport()
    stores: dict[str, ImageStore] = {}
    down: set[str] = set()
    for n, item in enumerate(outbox.items()):
        if limit is not None and n >= limit:
            break
        if item.role not in ROLES or item.op not in ("put", "delete"):
            report.failed += 1
            report.errors[item.id] = f"unknown outbox entry {item.role}/{item.op}"
            continue
        if item.role in down:
            report.failed += 1
            continue
        try:
            if item.role not in stores:
                stores[item.role] = open_store(role_uri(settings, item.role))
            store = stores[item.role]
            data = outbox.data(item) if item.op == "put" else None
            _apply(store, item.op, item.key, data, item.metadata)
        except (StoreError, StoreUnavailable) as exc:
            down.add(item.role)
            report.failed += 1
            report.errors[role_uri(settings, item.role)] = str(exc)
            outbox.note_failure(item, str(exc))
            continue
        except OSError as exc:  # a damaged item: leave it for a person, go on with the rest
            report.failed += 1
            report.errors[item.id] = f"outbox item {item.id} is damaged: {exc}"
            continue
        # Remove only the version we delivered: a newer intent queued meanwhile keeps its entry.
        current = outbox.get(item.id)
        if current is not None and (current.op, current.sha256) == (item.op, item.sha256):
            outbox.discard(item.role, item.key)
        report.sent += 1
    report.remaining = len(outbox)
    outbox.sweep()
    return report


# ---------------------------------------------------------------- saving

@dataclass(frozen=True)
class SaveResult:
    """Where a person's answer went. `location` is the full address (`s3://bucket/prefix/key` or a
    local path) even when queued: it is where the item will be once the outbox is delivered."""

    label: str
    predicted: str
    key: str  # relative to the relabeled root: `<label>/<sha256>.png`
    location: str
    sha256: str  # of the PNG crop
    saved_at: str
    queued: bool = False  # the crop waits in the outbox
    reason: str | None = None  # why something was queued (the store's message, naming the setting to fix)
    already_stored: bool = False
    original_key: str | None = None
    original_location: str | None = None
    original_queued: bool = False
    synced: int = 0  # earlier outbox items delivered along with this save
    pending: int = 0  # outbox items still waiting after this save

    @property
    def confirmed(self) -> bool:
        return self.label == self.predicted

    @property
    def object_key(self) -> str:
        """What a history record should point at: the crop's full address."""
        return self.location

    def message(self) -> str:
        verb = "Confirmed" if self.confirmed else f"Saved as {self.label}"
        if self.queued:
            return (f"{verb}, but the store could not take it now: it waits in the local outbox and will go "
                    f"to {self.location} on a later save or `python -m facexpr sync`. Reason: {self.reason}")
        text = f"{verb}: {self.location}" + (" (it was already there)" if self.already_stored else "")
        if self.original_queued:
            text += f". The original image waits in the outbox ({self.reason})"
        if self.synced:
            text += f". Also delivered {self.synced} item(s) from the outbox"
        return text


def _check_crop(crop: np.ndarray) -> np.ndarray:
    crop = np.asarray(crop)
    if crop.shape != (CROP_SIZE, CROP_SIZE):
        raise ImageError(f"A face crop must be {CROP_SIZE}×{CROP_SIZE} gray pixels, not {crop.shape}.")
    if crop.dtype != np.uint8:
        crop = np.clip(crop, 0, 255).astype(np.uint8)
    return crop


def save_crop(settings: Settings, crop: np.ndarray, label: str, *, predicted: str, confidence: float,
              model_version: str, original: bytes | None = None, image_sha256: str | None = None,
              face_index: int = 0, replaces: SaveResult | None = None, now: datetime | None = None
              ) -> SaveResult:
    """Store CROP under LABEL (and ORIGINAL once). Raises LabelError/ImageError for bad input and
    StoreError only when even the outbox cannot keep the item; every store failure is queued."""
    label = parse_label(label)
    predicted = parse_label(predicted)
    png = encode_png(_check_crop(crop))
    sha = hashlib.sha256(png).hexdigest()
    key = f"{label}/{sha}.png"
    saved_at = _now_iso(now)
    metadata = {"predicted-expression": predicted, "confidence": f"{float(confidence):.6f}",
                "model-version": model_version, "saved-at": saved_at, "label": label}

    ops: list[tuple[str, str, str, bytes | None, dict[str, str]]] = [(RELABELED, "put", key, png, metadata)]
    original_key = None
    if original:
        original_sha = image_sha256 or hashlib.sha256(original).hexdigest()
        original_key = f"{original_sha}.{image_extension(original)}"
        ops.append((ORIGINALS, "put", original_key, original,
                    {"sha256": original_sha, "saved-at": saved_at, "face-crop": f"{face_index}:{key}"}))
    if replaces is not None and replaces.key != key:
        # The person changed their mind about this face: the earlier answer must not train the model.
        ops.append((RELABELED, "delete", replaces.key, None, {}))

    outbox = outbox_for(settings)
    stores: dict[str, ImageStore] = {}
    reason: str | None = None  # set by the first failure; both roles live in one bucket (or disk),
    #                            so the rest of this save is queued without waiting on it again
    outcome: dict[str, tuple[str, bool]] = {}  # role+key → (location, queued)
    already = False
    for role, op, k, data, meta in ops:
        uri = role_uri(settings, role)
        if reason is None:
            try:
                if role not in stores:
                    stores[role] = open_store(uri)
                store = stores[role]
                if op == "delete":
                    store.delete(k)
                elif store.exists(k):  # content-hash key already there: keep the first arrival's time
                    already = already or role == RELABELED
                else:
                    store.put(k, data or b"", meta)
                outbox.discard(role, k)  # this newer intent supersedes anything queued for the key
                outcome[role + k] = (store.location(k), False)
                continue
            except (StoreError, StoreUnavailable) as exc:
                reason = str(exc)
        outbox.add(role, op, k, data, meta, reason=reason or "", target=uri)
        outcome[role + k] = (_planned_location(settings, role, k), True)

    synced = 0
    if reason is None and len(outbox):
        try:
            synced = flush_outbox(settings, limit=FLUSH_ON_SAVE).sent
        except FacexprError:
            pass  # the save itself succeeded; `sync` will report what is wrong
    location, queued = outcome[RELABELED + key]
    original_location, original_queued = outcome[ORIGINALS + original_key] if original_key else (None, False)
    return SaveResult(label=label, predicted=predicted, key=key, location=location, sha256=sha,
                      saved_at=saved_at, queued=queued, reason=reason,
                      already_stored=already, original_key=original_key, original_location=original_location,
                      original_queued=original_queued, synced=synced, pending=len(outbox))


def _planned_location(settings: Settings, role: str, key: str) -> str:
    uri = role_uri(settings, role)
    return f"{uri.rstrip('/')}/{key}" if uri.startswith("s3://") else str(Path(uri) / key)


def save_relabel(settings: Settings, prediction: Prediction, face_index: int, label: str,
                 original: bytes | None = None, *, replaces: SaveResult | None = None,
                 now: datetime | None = None) -> SaveResult:
    """Store face FACE_INDEX of PREDICTION under LABEL (the page's call); see `save_crop`."""
    if not 0 <= face_index < len(prediction.faces):
        raise ImageError(f"This image has {len(prediction.faces)} face(s); "
                         f"there is no face {face_index + 1}.")
    face = prediction.faces[face_index]
    return save_crop(settings, face.crop, label, predicted=face.expression, confidence=face.confidence,
                     model_version=prediction.model_version, original=original,
                     image_sha256=prediction.image_sha256, face_index=face_index, replaces=replaces, now=now)


# ---------------------------------------------------------------- what has been gathered

def count_relabeled(source: Settings | str, since: str | datetime | None = None) -> dict[str, int]:
    """Relabeled images per class (all seven, FER2013 order) that arrived in the store after SINCE
    (e.g. the served model's card `trained_at`: what that model has not learnt from)."""
    store = open_store(source.relabeled_uri if isinstance(source, Settings) else source)
    after = parse_time(since)
    counts = dict.fromkeys(EXPRESSIONS, 0)
    for obj in store.list_objects():
        label, _, rest = obj.key.partition("/")
        if label in INDEX and rest.lower().endswith(".png") and (after is None or obj.modified > after):
            counts[label] += 1
    return counts


@dataclass(frozen=True)
class RelabelSummary:
    counts: dict[str, int]  # per class, since the model was trained
    since: str | None
    pending: int  # items waiting in the outbox
    error: str | None = None  # why the counts could not be read (the page shows it instead)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def relabel_summary(settings: Settings, since: str | datetime | None = None) -> RelabelSummary:
    """Counts for the page; never raises for a store problem (it is shown as `error`)."""
    since_text = since.isoformat() if isinstance(since, datetime) else since
    pending = len(outbox_for(settings))
    try:
        return RelabelSummary(count_relabeled(settings, since), since_text, pending)
    except FacexprError as exc:
        return RelabelSummary(dict.fromkeys(EXPRESSIONS, 0), since_text, pending, str(exc))

