"""One face, one label: the latest answer to a face wins, and the older objects are removed.

A face's crop has one content-hash name; each answer stores it under its label
(`<label>/<sha>.png`), with the time it was given (`saved-at`). Every writer — a save in any
session or process, or an outbox delivery — settles the face after its put: whichever label holds
the latest answer keeps the crop, the others lose it. Each writer sees at least the answers written
before it, so racing answers converge on the latest one. (The history keeps every answer.)
"""

from __future__ import annotations

from datetime import UTC, datetime

from facexpr.core.labels import EXPRESSIONS
from facexpr.core.times import utc
from facexpr.storage.store import ImageStore

_NEVER = datetime.min.replace(tzinfo=UTC)


def answer_time(now: datetime | None = None) -> str:
    """When an answer was given, ISO in UTC with microseconds when there are any: two answers to
    one face within a second must still be ordered."""
    return (now or datetime.now(UTC)).astimezone(UTC).isoformat()


def _given_at(metadata: dict[str, str]) -> datetime | None:
    try:
        return utc(metadata.get("saved-at"))
    except ValueError:
        return None


def order_of_answer(label: str, metadata: dict[str, str]) -> tuple[datetime, str]:
    """How answers to one face are ordered: by when they were given, ties broken by the label."""
    return _given_at(metadata) or _NEVER, label


def settle_face(store: ImageStore, key: str, metadata: dict[str, str]) -> bool:
    """After KEY (`<label>/<sha>.png`, answered as METADATA says) was put: remove the same crop
    under every other label, unless a later answer is found there, which wins and KEY goes instead.
    Returns whether KEY's answer is the one kept."""
    label, _, name = key.partition("/")
    answers = {label: order_of_answer(label, metadata)}
    for other in EXPRESSIONS:
        other_key = f"{other}/{name}"
        if other != label and store.exists(other_key):
            answers[other] = order_of_answer(other, store.metadata(other_key))
    latest = max(answers, key=answers.__getitem__)
    for other in answers:
        if other != latest:
            store.delete(f"{other}/{name}")
    return latest == label


def stale_delete(store: ImageStore, key: str, metadata: dict[str, str]) -> bool:
    """A queued delete of KEY issued by an answer older than the one now under KEY (a later answer
    put it back): carrying it out would remove the latest answer."""
    issued = _given_at(metadata)
    if issued is None or not store.exists(key):
        return False
    stored = _given_at(store.metadata(key))
    return stored is not None and stored > issued
