"""VACUUM ANALYZE of an environment's database, with what it changed.

The release document's weekly maintenance. Plain VACUUM only: VACUUM FULL rewrites every table
under an exclusive lock and is never run from here. Table statistics come from
pg_stat_user_tables before and after, so the record shows what the vacuum did.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ultra_ops.engine.errors import OperationError
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment

psycopg = lazy_module("psycopg")

# A vacuum of a large table may take long; a lock it cannot get within this is reported, not waited on.
_STATEMENT_TIMEOUT_S = 3 * 3600.0
_LOCK_TIMEOUT_S = 60.0
_STATS = """
SELECT schemaname, relname, n_live_tup, n_dead_tup, last_vacuum, last_autovacuum, last_analyze,
       last_autoanalyze
FROM pg_stat_user_tables ORDER BY schemaname, relname
"""


@dataclass(frozen=True)
class TableStats:
    table: str
    live: int
    dead: int
    last_vacuum: str | None
    last_autovacuum: str | None
    last_analyze: str | None
    last_autoanalyze: str | None

    @property
    def dead_ratio(self) -> float:
        total = self.live + self.dead
        return round(self.dead / total, 4) if total else 0.0


@dataclass(frozen=True)
class VacuumReport:
    environment: str
    database: str
    duration_s: float
    size_before: int
    size_after: int
    before: list[TableStats] = field(default_factory=list)
    after: list[TableStats] = field(default_factory=list)

    @property
    def dead_before(self) -> int:
        return sum(t.dead for t in self.before)

    @property
    def dead_after(self) -> int:
        return sum(t.dead for t in self.after)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("before", "after"):
            data[key] = [{**asdict(t), "dead_ratio": t.dead_ratio} for t in getattr(self, key)]
        return data


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def table_stats(conn: psycopg.Connection) -> list[TableStats]:
    return [
        TableStats(f"{schema}.{name}", int(live), int(dead), _iso(v), _iso(av), _iso(a), _iso(aa))
        for schema, name, live, dead, v, av, a, aa in conn.execute(_STATS).fetchall()
    ]


def _size(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])


def vacuum_analyze(env: Environment, *, log: Log | None = None, redact: Redactor | None = None) -> VacuumReport:
    """VACUUM (ANALYZE) every table of the environment's database; the statistics before and after."""
    log = log or NullLog()
    redact = redact or Redactor.for_environment(env)
    db = env.database
    try:
        with psycopg.connect(
            **db.conninfo(statement_timeout_s=_STATEMENT_TIMEOUT_S, lock_timeout_s=_LOCK_TIMEOUT_S), autocommit=True
        ) as conn:  # VACUUM cannot run inside a transaction
            before, size_before = table_stats(conn), _size(conn)
            log.info(
                f"VACUUM ANALYZE {db.name}: {len(before)} tables, "
                f"{sum(t.dead for t in before)} dead tuples, {size_before / 1e6:.1f} MB"
            )
            start = time.monotonic()
            conn.execute(psycopg.sql.SQL("VACUUM (ANALYZE)"))
            duration = time.monotonic() - start
            # Statistics reach pg_stat_user_tables when this backend reports them: force it now.
            conn.execute("SELECT pg_stat_force_next_flush()")
            conn.execute("SELECT pg_stat_clear_snapshot()")
            after, size_after = table_stats(conn), _size(conn)
    except psycopg.Error as exc:
        raise OperationError(redact(f"VACUUM ANALYZE of {db.name} failed: {exc}".strip())) from None
    report = VacuumReport(env.name, db.name, round(duration, 3), size_before, size_after, before, after)
    log.info(
        f"VACUUM ANALYZE {db.name} done in {duration:.1f} s: dead tuples {report.dead_before} -> {report.dead_after}"
    )
    return report
