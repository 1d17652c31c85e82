"""A person's answer to a prediction: store the face crop under its true label, never lose it.

- `keys`: where things go (the relabeled and originals roots, content-hash keys);
- `saving`: `save_relabel` / `save_crop`, the page's and the CLI's call;
- `outbox`: the store outbox, where answers the store could not take wait for `sync`;
- `counts`: what has been gathered since a model was trained.
"""

from facexpr.photo.imaging import image_extension
from facexpr.storage.relabel.counts import RelabelSummary, count_relabeled, relabel_summary
from facexpr.storage.relabel.keys import (
    ORIGINALS,
    RELABELED,
    ROLES,
    originals_uri,
    planned_location,
    role_uri,
)
from facexpr.storage.relabel.outbox import (
    OutboxItem,
    StoreOutbox,
    SyncReport,
    deliver,
    flush_outbox,
    outbox_for,
)
from facexpr.storage.relabel.saving import FLUSH_ON_SAVE, SaveResult, save_crop, save_relabel

__all__ = [
    "FLUSH_ON_SAVE", "ORIGINALS", "RELABELED", "ROLES", "OutboxItem", "RelabelSummary",
    "SaveResult", "StoreOutbox", "SyncReport", "count_relabeled", "deliver", "flush_outbox",
    "image_extension", "originals_uri", "outbox_for", "planned_location", "relabel_summary", "role_uri",
    "save_crop", "save_relabel",
]
