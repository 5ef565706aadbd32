"""Approvals: a person's yes to a version for an environment, kept until it expires.

Scheduled production deploys go ahead only with a valid approval; a manual deploy is a person's
decision already. Approvals live in `<state_dir>/approvals.sqlite3` of the environment approved.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from ultra_ops.engine.clock import local_time
from ultra_ops.engine.errors import InputError
from ultra_ops.engine.inputs import validate_tag
from ultra_ops.engine.release.records import verified_deploys
from ultra_ops.engine.settings import Environment, Settings
from ultra_ops.engine.versions import STAGING

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@+-]{0,79}")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version TEXT NOT NULL,
    approved_by TEXT NOT NULL,
    approved_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
)"""


@dataclass(frozen=True)
class Approval:
    environment: str
    version: str
    approved_by: str
    approved_at: datetime
    expires_at: datetime


def _path(env: Environment) -> Path:
    return env.state_dir / "approvals.sqlite3"


@contextmanager
def _connect(env: Environment) -> Iterator[sqlite3.Connection]:
    _path(env).parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(_path(env), timeout=30)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(_SCHEMA)
        yield conn


def release_author(settings: Settings, version: str) -> str | None:
    """Who took `version` to staging: the person the config may bar from approving it."""
    if STAGING not in settings.environments:
        return None
    records = verified_deploys(settings.environments[STAGING], version=version)
    return records[-1].launched_by if records else None


def check_approval(settings: Settings, environment: str, version: str, approved_by: str) -> Environment:
    """InputError when this approval may not be given: a bad version or name, or the release's author."""
    env = settings.environment(environment)
    validate_tag(version)
    if not _NAME.fullmatch(approved_by or ""):
        raise InputError("--by must name the person approving (letters, digits, space, . _ @ + -; at most 80)")
    if not settings.calendar.approval.author_may_approve and release_author(settings, version) == approved_by:
        raise InputError(
            f"{approved_by} took {version} to staging and may not approve it too (config: "
            "calendar.approval.author_may_approve)"
        )
    return env


def parse_at(text: str | None) -> datetime | None:
    """An approval's --at: an ISO time with its zone, or None."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"--at {text[:40]!r} is not an ISO time (e.g. 2026-12-03T09:00+01:00)") from None


def production_ticks(settings: Settings, after: datetime, count: int) -> list[datetime]:
    """The next `count` production release moments after `after`, local and zone-aware."""
    rule, zone = settings.calendar.production, ZoneInfo(settings.timezone)
    local = after.astimezone(zone)
    found: list[datetime] = []
    day = local.date()
    while len(found) < count:
        moment = datetime.combine(day, rule.at, tzinfo=zone)
        if rule.runs_on(day) and moment > local:
            found.append(moment)
        day += timedelta(days=1)
    return found


def check_valid_from(settings: Settings, valid_from: datetime | None, now: datetime) -> datetime:
    """When an approval starts to count: now, or a coming moment (a person approving on Monday for
    Thursday's tick, or the demo rehearsing the calendar), no later than the second coming production
    tick, so an approval is always given for one of the next two releases."""
    if valid_from is None:
        return now
    if valid_from.tzinfo is None:
        raise InputError("--at needs a time zone (e.g. 2026-12-03T09:00+01:00)")
    latest = production_ticks(settings, now, 2)[-1]
    if not now - timedelta(minutes=5) <= valid_from <= latest:
        raise InputError(
            f"--at must be from now to the second coming production tick ({local_time(latest, settings.timezone)}), "
            f"not {valid_from.isoformat()}"
        )
    return valid_from


def approve(
    settings: Settings,
    environment: str,
    version: str,
    approved_by: str,
    now: datetime | None = None,
    valid_from: datetime | None = None,
) -> Approval:
    """Record a person's approval of `version` for `environment`, counting from `valid_from` (default
    now) until it expires; InputError when it may not be given."""
    env = check_approval(settings, environment, version, approved_by)
    rules = settings.calendar.approval
    now = now or datetime.now(UTC)
    start = check_valid_from(settings, valid_from, now)
    approval = Approval(env.name, version, approved_by, start, start + timedelta(hours=rules.expires_hours))
    with _connect(env) as conn, conn:
        conn.execute(
            "INSERT INTO approvals (version, approved_by, approved_at, expires_at) VALUES (?, ?, ?, ?)",
            (version, approved_by, approval.approved_at.isoformat(), approval.expires_at.isoformat()),
        )
    return approval


def valid_approval(settings: Settings, environment: str, version: str, now: datetime) -> Approval | None:
    """The newest approval of `version` that has not expired at `now`."""
    env = settings.environments.get(environment)
    if env is None or not _path(env).exists():
        return None
    with _connect(env) as conn:
        rows = conn.execute(
            "SELECT approved_by, approved_at, expires_at FROM approvals WHERE version = ? ORDER BY id DESC", (version,)
        ).fetchall()
    for by, at, expires in rows:
        approval = Approval(environment, version, by, datetime.fromisoformat(at), datetime.fromisoformat(expires))
        if approval.approved_at <= now < approval.expires_at:
            return approval
    return None
