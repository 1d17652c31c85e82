"""The store outbox: a person's answers that the image store could not take yet.

Items wait under `FACEXPR_DATA_DIR/outbox` until a later save or `python -m facexpr sync`
delivers them, oldest first. (The MongoDB history has its own, separate `WriteBuffer`.)
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from facexpr.core.config import Settings
from facexpr.core.errors import OutboxItemDamaged, StoreError
from facexpr.core.labels import EXPRESSIONS
from facexpr.core.times import iso_seconds
from facexpr.storage.relabel.keys import RELABELED, ROLES, role_uri
from facexpr.storage.relabel.latest import order_of_answer, settle_face, stale_delete
from facexpr.storage.store import ImageStore, atomic_write, open_store


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


class StoreOutbox:
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
                          queued_at=iso_seconds(), reason=reason, target=target)
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

    def pending(self, role: str, key: str) -> OutboxItem | None:
        """The entry waiting for ROLE/KEY, if any."""
        return self.get(_item_id(role, key))

    def __len__(self) -> int:
        return len(list(self.root.glob("*.json"))) if self.root.is_dir() else 0

    def data(self, item: OutboxItem) -> bytes:
        """The bytes of a put; OutboxItemDamaged when they are gone or do not match the checksum."""
        try:
            data = self._bin(item.id).read_bytes()
        except OSError as exc:
            raise OutboxItemDamaged(f"outbox item {item.id} is damaged: its data cannot be read "
                                    f"({exc.strerror or exc})") from exc
        if hashlib.sha256(data).hexdigest() != item.sha256:
            raise OutboxItemDamaged(f"outbox item {item.id} is damaged: it does not match its checksum")
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


def outbox_for(settings: Settings) -> StoreOutbox:
    return StoreOutbox(Path(settings.data_dir) / "outbox")


@dataclass
class SyncReport:
    sent: int = 0
    failed: int = 0
    remaining: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # destination → the last error

    @property
    def ok(self) -> bool:
        return self.remaining == 0


def deliver(store: ImageStore, op: str, key: str, data: bytes | None, metadata: dict[str, str],
            role: str = "") -> bool:
    """Carry out one put or delete on STORE; True when a put found the key already there.

    A person's answer (ROLE relabeled) is always written, with its time, and then settles its
    face (`latest`): one label per face, the latest answer's; a delete an answer queued is not
    carried out over a later answer. Other keys keep the first arrival (content-hash keys)."""
    if op == "delete":
        if not (role == RELABELED and stale_delete(store, key, metadata)):
            store.delete(key)
        return False
    found = store.exists(key)
    if role == RELABELED:
        store.put(key, data or b"", metadata)
        settle_face(store, key, metadata)
    elif not found:
        store.put(key, data or b"", metadata)
    return found


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
            deliver(store, item.op, item.key, data, item.metadata, item.role)
        except OutboxItemDamaged as exc:  # leave it for a person, go on with the rest
            report.failed += 1
            report.errors[item.id] = str(exc)
            continue
        except StoreError as exc:  # StoreUnavailable too: this destination waits for the next round
            down.add(item.role)
            report.failed += 1
            report.errors[role_uri(settings, item.role)] = str(exc)
            outbox.note_failure(item, str(exc))
            continue
        # Remove only the version we delivered: a newer intent queued meanwhile keeps its entry.
        current = outbox.get(item.id)
        if current is not None and (current.op, current.sha256) == (item.op, item.sha256):
            outbox.discard(item.role, item.key)
        report.sent += 1
    report.remaining = len(outbox)
    outbox.sweep()
    return report


def discard_older_answers(outbox: StoreOutbox, key: str, metadata: dict[str, str]) -> None:
    """Drop queued answers to the same face under another label that are older than this one (one
    whose delivery is already under way is settled by `settle_face` instead)."""
    label, _, name = key.partition("/")
    mine = order_of_answer(label, metadata)
    for other in EXPRESSIONS:
        item = outbox.pending(RELABELED, f"{other}/{name}") if other != label else None
        if item is not None and item.op == "put" and order_of_answer(other, item.metadata) < mine:
            outbox.discard(RELABELED, item.key)
