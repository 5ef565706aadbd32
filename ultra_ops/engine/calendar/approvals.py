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

from ultra_ops.engine.errors import InputError
from ultra_ops.engine.inputs import validate_tag
from ultra_ops.engine.release.records import ReleaseStatus, find_releases
from ultra_ops.engine.settings import Environment, Settings

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
    if "staging" not in settings.environments:
        return None
    records = find_releases(settings.environments["staging"], version=version, status=ReleaseStatus.DEPLOYED,
                            operation="deploy")
    return records[-1].launched_by if records else None


def check_approval(settings: Settings, environment: str, version: str, approved_by: str) -> Environment:
    """InputError when this approval may not be given: a bad version or name, or the release's author."""
    env = settings.environment(environment)
    validate_tag(version)
    if not _NAME.fullmatch(approved_by or ""):
        raise InputError("--by must name the person approving (letters, digits, space, . _ @ + -; at most 80)")
    if not settings.calendar.approval.author_may_approve and release_author(settings, version) == approved_by:
        raise InputError(f"{approved_by} took {version} to staging and may not approve it too (config: "
                         "calendar.approval.author_may_approve)")
    return env


def approve(settings: Settings, environment: str, version: str, approved_by: str,
            now: datetime | None = None) -> Approval:
    """Record a person's approval of `version` for `environment`; InputError when it may not be."""
    env = check_approval(settings, environment, version, approved_by)
    rules = settings.calendar.approval
    now = now or datetime.now(UTC)
    approval = Approval(env.name, version, approved_by, now, now + timedelta(hours=rules.expires_hours))
    with _connect(env) as conn, conn:
        conn.execute("INSERT INTO approvals (version, approved_by, approved_at, expires_at) VALUES (?, ?, ?, ?)",
                     (version, approved_by, approval.approved_at.isoformat(), approval.expires_at.isoformat()))
    return approval


def valid_approval(settings: Settings, environment: str, version: str, now: datetime) -> Approval | None:
    """The newest approval of `version` that has not expired at `now`."""
    env = settings.environments.get(environment)
    if env is None or not _path(env).exists():
        return None
    with _connect(env) as conn:
        rows = conn.execute("SELECT approved_by, approved_at, expires_at FROM approvals WHERE version = ? "
                            "ORDER BY id DESC", (version,)).fetchall()
    for by, at, expires in rows:
        approval = Approval(environment, version, by, datetime.fromisoformat(at), datetime.fromisoformat(expires))
        if approval.approved_at <= now < approval.expires_at:
            return approval
    return None
