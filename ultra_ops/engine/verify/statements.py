"""Database query performance: the slowest statements since the deploy (pg_stat_statements, where
the extension is installed in the environment's database) and connection headroom.

"Since the deploy": pg_stat_statements counts from its last reset, so the deploy's verification
keeps a baseline (calls and total time per statement, `<state_dir>/statements_baseline.json`)
when its window starts, and every later reading subtracts it. Without a baseline the figures are
since the last reset, and the detail says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ultra_ops.engine.files import private_dir
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.settings import Environment
from ultra_ops.engine.settings.verify import PerformanceSettings
from ultra_ops.engine.verify.checks import describe_error
from ultra_ops.engine.verify.report import CheckResult

psycopg = lazy_module("psycopg")

_BASELINE = "statements_baseline.json"
_TOP = 5


def _connect(env: Environment, timeout_s: float) -> Any:
    info = env.database.conninfo(statement_timeout_s=timeout_s, lock_timeout_s=timeout_s)
    info["connect_timeout"] = env.database.libpq_connect_timeout(timeout_s)
    return psycopg.connect(**info, autocommit=True)


def _installed(conn: Any) -> bool:
    return conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone() is not None


def _statements(conn: Any) -> dict[str, tuple[int, float, str]]:
    rows = conn.execute(
        "SELECT queryid::text, calls, total_exec_time, left(query, 120) FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchall()
    return {r[0]: (int(r[1]), float(r[2]), r[3]) for r in rows if r[0] is not None}


def save_baseline(env: Environment, timeout_s: float = 5.0) -> bool:
    """Record where pg_stat_statements stands now (a deploy's window starts); False without it."""
    try:
        with _connect(env, timeout_s) as conn:
            if not _installed(conn):
                return False
            current = _statements(conn)
    except psycopg.Error:
        return False
    private_dir(env.state_dir)
    path = env.state_dir / _BASELINE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({k: [c, t] for k, (c, t, _q) in current.items()}))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return True


def _baseline(env: Environment) -> dict[str, list[float]] | None:
    try:
        return json.loads(Path(env.state_dir / _BASELINE).read_text())
    except (OSError, ValueError):
        return None


def database_results(env: Environment, perf: PerformanceSettings, timeout_s: float) -> list[CheckResult]:
    try:
        with _connect(env, timeout_s) as conn:
            used, limit, reserved = conn.execute(
                "SELECT (SELECT count(*) FROM pg_stat_activity), current_setting('max_connections')::int, "
                "current_setting('superuser_reserved_connections')::int"
            ).fetchone()
            installed = _installed(conn)
            unreadable = None
            try:
                current = _statements(conn) if installed else {}
            except psycopg.Error as exc:
                # Created in the database but not in shared_preload_libraries: the view cannot be read.
                current, unreadable = {}, describe_error(exc, timeout_s)
    except psycopg.Error as exc:
        reason = describe_error(exc, timeout_s)
        return [CheckResult("database connections", "database_performance", False, 0.0, 1, reason)]
    usable = max(limit - reserved, 1)
    free = (usable - used) / usable
    connections = CheckResult(
        "database connections",
        "database_performance",
        free >= perf.connection_headroom,
        0.0,
        1,
        f"{used} of {usable} connections in use ({free:.0%} free, at least {perf.connection_headroom:.0%})",
        metrics={"connections_used": float(used), "connections_free_share": free},
    )
    if not installed:
        return [
            connections,
            CheckResult(
                "slowest statements",
                "database_performance",
                True,
                0.0,
                0,
                f"pg_stat_statements is not installed in {env.database.name}: statement times not checked",
                blocking=False,
                skipped=True,
            ),
        ]
    if unreadable is not None:
        return [
            connections,
            CheckResult(
                "slowest statements",
                "database_performance",
                True,
                0.0,
                0,
                f"pg_stat_statements cannot be read in {env.database.name} ({unreadable}): statement times not checked",
                blocking=False,
                skipped=True,
            ),
        ]
    base = _baseline(env)
    since = "since the deploy" if base is not None else "since pg_stat_statements was last reset"
    deltas = []
    for key, (calls, total, query) in current.items():
        c0, t0 = (base or {}).get(key, [0, 0.0])
        calls, total = calls - int(c0), total - float(t0)
        if calls > 0:
            deltas.append((total / calls, calls, query))
    deltas.sort(reverse=True)
    slow = [d for d in deltas if d[0] > perf.slow_statement_ms]
    top = "; ".join(f"{mean:.1f} ms x{calls}: {' '.join(q.split())[:60]}" for mean, calls, q in deltas[:_TOP])
    detail = f"{len(slow)} statements over {perf.slow_statement_ms:g} ms mean {since}" + (
        f"; slowest: {top}" if top else "; no statements ran"
    )
    # Slow statements are a warning: a person reads which ones, they do not stop a deploy alone.
    statements = CheckResult(
        "slowest statements",
        "database_performance",
        not slow,
        0.0,
        1,
        detail,
        blocking=False,
        metrics={"slowest_mean_ms": deltas[0][0] if deltas else 0.0, "slow_statements": float(len(slow))},
    )
    return [connections, statements]
