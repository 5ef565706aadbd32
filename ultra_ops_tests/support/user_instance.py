"""The operator's own Dagster instances, which a test run must leave as they were: the repository's
`.dagster_home` (where the CLI and `./dev ui` record by default) and `var/platform`'s home."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ultra_ops_tests.support.services import REPO

USER_HOME = REPO / ".dagster_home"


def recorded_runs(home: Path = USER_HOME) -> dict[str, str]:
    """run id -> job name of the runs in a SQLite instance (read only; {} where there is none)."""
    database = home / "history" / "runs.db"
    if not database.exists():
        return {}
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as conn:
        return dict(conn.execute("SELECT run_id, pipeline_name FROM runs").fetchall())


def state(home: Path = USER_HOME) -> tuple[bool, dict[str, str]]:
    """What a test session must not change: whether the home exists, and its runs."""
    return home.exists(), recorded_runs(home)


def changes(before: tuple[bool, dict[str, str]], after: tuple[bool, dict[str, str]], home: Path = USER_HOME) -> str:
    """What changed between two `state`s, in a sentence; "" when nothing did."""
    if not before[0] and after[0]:
        return f"{home} was created"
    new = {run_id: job for run_id, job in after[1].items() if run_id not in before[1]}
    if new:
        jobs = ", ".join(sorted(set(new.values())))
        return f"{len(new)} runs were recorded in {home} ({jobs})"
    return ""
