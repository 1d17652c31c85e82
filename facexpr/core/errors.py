"""The project's one error family: every failure a person may see is a `FacexprError` whose
message says what to do. Each backend has its error, and "unavailable" (an outage: retrying
later may work) is a kind of it, so a caller that only cares that the backend failed catches one
class."""

from __future__ import annotations

from collections.abc import Sequence


class FacexprError(Exception):
    """Base class: the message is plain words a user can act on."""


class ImageError(FacexprError):
    """The bytes are not an image facexpr can read (or are too large, too small, broken)."""


class LabelError(FacexprError):
    """A label that is not one of the seven expressions."""


class ModelError(FacexprError):
    """No usable model file or model card (or face detector file)."""


class DataError(FacexprError):
    """A dataset location that is missing, empty or not in the image layout."""


class StoreError(FacexprError):
    """The image store refused the request for a reason a setting must fix (bucket, credentials,
    a folder's permissions), or a queued item is damaged."""


class StoreUnavailable(StoreError):
    """The image store could not be reached; retrying later may work."""


class OutboxItemDamaged(StoreError):
    """An item waiting in the store outbox cannot be delivered as it is (its bytes are gone or do
    not match their checksum): it stays for a person to look at; the rest go on."""


class HistoryError(FacexprError):
    """The history refused a request (an unknown record id, a broken database file, bad input)."""


class HistoryUnavailable(HistoryError):
    """The history database cannot be reached now; the health page says so instead of failing."""


class HistoryBuffered(HistoryUnavailable):
    """The database is unreachable, so the write was kept locally and will be delivered later.

    Nothing is lost: `record_ids` are the ids the records will have once delivered.
    """

    def __init__(self, message: str, record_ids: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.record_ids = list(record_ids)
