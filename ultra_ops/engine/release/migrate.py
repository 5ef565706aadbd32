"""Database migrations: plain `NNNN_name.sql` files applied in name order, each exactly once.

Each file runs in its own transaction together with its row in `schema_migrations`, so a
failing file leaves neither half of its changes nor a record behind, and earlier files stay.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ultra_ops.engine.errors import OperationError
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment

psycopg = lazy_module("psycopg")

# A migration may rightly rebuild a big table, but must not wait forever behind the running
# application's locks (nor behind another migration's advisory lock).
MIGRATION_TIMEOUT_S = 3600.0
MIGRATION_LOCK_TIMEOUT_S = 60.0
MIGRATION_NAME = re.compile(r"^\d{4}_[A-Za-z0-9_\-]+\.sql$")
# One fixed advisory lock key: two deploys migrating the same database never interleave files.
_LOCK_KEY = 0x756C7472614D6967  # "ultraMig"

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def migration_files(env: Environment) -> list[Path]:
    """The migration files of the environment, sorted by name; any other file is an error."""
    folder = env.migrations_dir
    if folder is None:
        return []
    if not folder.is_dir():
        raise OperationError(f"migrations folder {folder} does not exist")
    files = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if not MIGRATION_NAME.fullmatch(path.name):
            raise OperationError(
                f"migration file {path} does not match NNNN_name.sql (four digits, '_', a name, '.sql')"
            )
        files.append(path)
    return files


def _connect(env: Environment, redact: Callable[[str], str]) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(
            **env.database.conninfo(statement_timeout_s=MIGRATION_TIMEOUT_S, lock_timeout_s=MIGRATION_LOCK_TIMEOUT_S),
            autocommit=True,
        )
    except psycopg.Error as exc:
        raise OperationError(redact(f"cannot connect to database {env.database.name}: {_pg_message(exc)}")) from None


def _pg_message(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _applied(conn: psycopg.Connection[Any]) -> set[str]:
    row = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
    if row is None or row[0] is None:
        return set()
    return {r[0] for r in conn.execute("SELECT version FROM schema_migrations").fetchall()}


def pending_migrations(env: Environment, *, redact: Redactor | None = None) -> list[str]:
    """Names of the migration files not yet recorded in the environment's database."""
    files = migration_files(env)
    if not files:
        return []
    redactor = redact or Redactor.for_environment(env)
    with _connect(env, redactor) as conn:
        done = _applied(conn)
    return [f.name for f in files if f.name not in done]


def apply_migrations(env: Environment, *, log: Log | None = None, redact: Redactor | None = None) -> list[str]:
    """Apply the pending migration files in name order; return the names applied.

    Raises OperationError naming the file and PostgreSQL's error if one fails; that file's
    changes are rolled back, the ones before it stay applied.
    """
    log = log or NullLog()
    files = migration_files(env)
    if not files:
        return []
    redactor = redact or Redactor.for_environment(env)
    applied: list[str] = []
    with _connect(env, redactor) as conn:
        # Held until the connection closes, which also releases it if anything below fails.
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        conn.execute(_CREATE_TABLE)
        done = _applied(conn)
        for path in files:
            if path.name in done:
                continue
            try:
                text = path.read_bytes()
            except OSError as exc:
                raise OperationError(f"cannot read migration {path}: {exc.strerror}") from None
            log.info(f"applying migration {path.name}")
            try:
                with conn.transaction():
                    # Without parameters psycopg sends the file as one simple query, so a file may
                    # hold many statements.
                    conn.execute(text)
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (path.name,))
            except psycopg.Error as exc:
                raise OperationError(
                    redactor(f"migration {path.name} failed and was rolled back: {_pg_message(exc)}")
                ) from None
            applied.append(path.name)
    if applied:
        log.info(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        log.info("no pending migrations")
    return applied
