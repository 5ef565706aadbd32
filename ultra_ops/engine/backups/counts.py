"""Row counts of every table, as the backup saw them: recorded in the manifest so a restore test
can tell a dump that lost rows or a whole table from a good one.

pg_dump imports the snapshot of the transaction the counts run in (`--snapshot`), so the counts
are of exactly the rows the dump holds, whatever writes the service makes meanwhile.
"""

from __future__ import annotations

import threading
from typing import Any

from ultra_ops.engine.errors import BackupError
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Environment

psycopg = lazy_module("psycopg")

# The tables pg_dump writes data for: ordinary tables outside the system schemas and not owned by
# an extension (pg_dump leaves those to the extension's script).
_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def table_name(schema: str, table: str) -> str:
    return f"{schema}.{table}"


def count_rows(conn: Any) -> dict[str, int]:
    """{"schema.table": rows} of every table the connection's database holds."""
    counts = {}
    for schema, table in conn.execute(_TABLES).fetchall():
        query = psycopg.sql.SQL("SELECT count(*) FROM {}.{}").format(
            psycopg.sql.Identifier(schema), psycopg.sql.Identifier(table)
        )
        counts[table_name(schema, table)] = int(conn.execute(query).fetchone()[0])
    return counts


class SnapshotCounts:
    """A read-only REPEATABLE READ transaction on the environment's database: its snapshot is
    exported for pg_dump, and the rows of every table are counted in it, in a thread, while pg_dump
    runs. The transaction stays open until the dump is done (pg_dump needs it to import the snapshot)."""

    def __init__(self, env: Environment, redact: Redactor) -> None:
        self.env, self.redact = env, redact
        self.snapshot = ""
        self._conn: Any = None
        self._thread: threading.Thread | None = None
        self._counts: dict[str, int] | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> SnapshotCounts:
        db = self.env.database
        try:
            self._conn = psycopg.connect(
                **db.conninfo(statement_timeout_s=self.env.backup.timeout_s), application_name="ultra_ops-backup-counts"
            )
            self._conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            self.snapshot = str(self._conn.execute("SELECT pg_export_snapshot()").fetchone()[0])
        except psycopg.Error as exc:
            self._close()
            raise BackupError(self.redact(f"cannot open a snapshot of {db.name}: {exc}")) from None
        self._thread = threading.Thread(target=self._count, name="uo-row-counts", daemon=True)
        self._thread.start()
        return self

    def _count(self) -> None:
        try:
            self._counts = count_rows(self._conn)
        except BaseException as exc:  # noqa: BLE001 - handed to counts()
            self._error = exc

    def counts(self) -> dict[str, int]:
        """The row counts, once counted (waits for the counting thread)."""
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            raise BackupError(
                self.redact(f"counting the rows of {self.env.database.name} failed: {self._error}")
            ) from None
        return dict(self._counts or {})

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()  # ends the transaction (rolled back: it only read)
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
            self._conn = None

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None and self._thread.is_alive():
            # An interrupted backup: cancel the counting query instead of waiting for it.
            try:
                self._conn.cancel_safe()
            except Exception:  # noqa: BLE001
                pass
            self._thread.join(timeout=10)
        self._close()
