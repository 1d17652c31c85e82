"""What has been gathered: relabeled images per class since a time (the served model's training)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from facexpr.core.config import Settings
from facexpr.core.errors import FacexprError
from facexpr.core.labels import EXPRESSIONS, INDEX
from facexpr.core.times import utc
from facexpr.storage.relabel.outbox import outbox_for
from facexpr.storage.store import open_store


def count_relabeled(source: Settings | str, since: str | datetime | None = None) -> dict[str, int]:
    """Relabeled images per class (all seven, FER2013 order) that arrived in the store after SINCE
    (e.g. the served model's card `trained_at`: what that model has not learnt from)."""
    store = open_store(source.relabeled_uri if isinstance(source, Settings) else source)
    after = utc(since)
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

