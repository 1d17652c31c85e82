"""Time in facexpr is UTC: one helper reads what documents and cards hold into aware datetimes."""

from __future__ import annotations

from datetime import UTC, datetime


def utc(value: datetime | str | None) -> datetime | None:
    """A UTC-aware datetime; naive values are taken as UTC, ISO strings are parsed (ValueError when
    a string is not an ISO time); None and "" stay None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso_seconds(now: datetime | None = None) -> str:
    """NOW (default: the current time) as an ISO string in UTC, to the second."""
    return (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
