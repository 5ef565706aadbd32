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
