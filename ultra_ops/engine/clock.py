"""Timestamps as ultra_ops writes them: one UTC format for every record, so they sort as text."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_timestamp(when: datetime | float | None = None) -> str:
    """ISO-8601 UTC with milliseconds, the one format of started_at and ended_at (so they sort as text)."""
    if when is None:
        moment = datetime.now(UTC)
    elif isinstance(when, datetime):
        moment = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    else:
        moment = datetime.fromtimestamp(when, UTC)
    return moment.isoformat(timespec="milliseconds")


def local_time(when: str | datetime, timezone: str) -> str:
    """A moment as an operator reads it: in the config's time zone, named (`2026-12-03 10:00:00 CET`).
    Records keep UTC; whatever ultra_ops shows (metadata, messages) is in the one zone of the config."""
    from zoneinfo import ZoneInfo

    moment = datetime.fromisoformat(when) if isinstance(when, str) else when
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return f"{moment.astimezone(ZoneInfo(timezone)):%Y-%m-%d %H:%M:%S %Z}"
