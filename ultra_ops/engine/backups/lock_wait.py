"""A backup behind a table lock fails within `backup.lock_wait_timeout_s`, naming who holds the lock.

pg_dump takes an ACCESS SHARE lock on every table before it reads any. Only an ACCESS EXCLUSIVE
lock blocks that (ALTER or DROP TABLE, TRUNCATE, VACUUM FULL, an explicit LOCK TABLE: a migration
or a hand-run session left open), and without a lock wait timeout pg_dump waits behind it silently
until `backup.timeout_s` (6 h by default). With `--lock-wait-timeout` it gives up; the sessions
holding such locks are then read from pg_locks and pg_stat_activity, so the error says whom to ask
(or which pid to end).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime

from ultra_ops.engine.backups.dump import run_pg_tool
from ultra_ops.engine.clock import local_time
from ultra_ops.engine.errors import BackupError
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Environment

psycopg = lazy_module("psycopg")

# pg_dump sets its lock wait as the statement timeout of its LOCK TABLE statements.
_TIMED_OUT = re.compile(r"canceling statement due to (?:statement|lock) timeout")
_WANTED = re.compile(r"LOCK TABLE (\S+) IN ACCESS SHARE MODE")
# Sessions holding an ACCESS EXCLUSIVE lock on a relation of this database, oldest transaction first.
_HOLDERS = """
SELECT l.pid, string_agg(DISTINCT l.relation::regclass::text, ', '), a.application_name, a.usename,
       a.state, coalesce(a.xact_start, a.backend_start)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.granted AND l.mode = 'AccessExclusiveLock'
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.pid <> pg_backend_pid()
GROUP BY l.pid, a.application_name, a.usename, a.state, a.xact_start, a.backend_start
ORDER BY 6, 1
"""


def lock_wait_option(env: Environment) -> str:
    return f"--lock-wait-timeout={max(1, round(env.backup.lock_wait_timeout_s * 1000))}"


def _since(value: datetime | None, timezone: str) -> str:
    return local_time(value, timezone) if value is not None else "an unknown time"


def blocking_sessions(env: Environment) -> list[str]:
    """The sessions holding an ACCESS EXCLUSIVE table lock in the environment's database, each as
    'pid N (application, user U, state, since T) on TABLES'; empty when none or unreadable."""
    db = env.database
    try:
        with psycopg.connect(**db.conninfo(statement_timeout_s=10), autocommit=True) as conn:
            rows = conn.execute(_HOLDERS).fetchall()
    except psycopg.Error:
        return []
    return [
        f"pid {pid} ({app or 'no application_name'}, user {user}, {state or 'state unknown'}, "
        f"since {_since(since, env.timezone)}) on {tables}"
        for pid, tables, app, user, state, since in rows
    ]


def lock_wait_failure(env: Environment, exc: BackupError, redact: Callable[[str], str]) -> BackupError:
    """For a pg_dump that gave up waiting for a table lock, the error naming the sessions that
    hold one; any other failure `exc` as it is."""
    text = str(exc)
    wanted = _WANTED.search(text)
    if wanted is None or not _TIMED_OUT.search(text):
        return exc
    sessions = blocking_sessions(env)
    who = "; ".join(sessions) if sessions else "a session that has let it go since"
    return BackupError(
        redact(
            f"backup of database {env.database.name} gave up after waiting "
            f"{env.backup.lock_wait_timeout_s:g} s for a lock on {wanted.group(1)}, "
            f"held by {who}: let that session finish (or end it: SELECT pg_terminate_backend(pid)) and try again, "
            f"or raise [environments.{env.name}.backup] lock_wait_timeout_s"
        )
    )


def run_pg_dump(args: Sequence[str], env: Environment, *, redact: Redactor, **kwargs: object) -> str:
    """run_pg_tool for pg_dump with the environment's lock wait timeout, its lock timeout explained."""
    try:
        return run_pg_tool([*args, lock_wait_option(env)], env, redact=redact, **kwargs)  # type: ignore[arg-type]
    except BackupError as exc:
        raise lock_wait_failure(env, exc, redact) from None
