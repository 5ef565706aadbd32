"""Database maintenance: VACUUM ANALYZE as the database_maintenance asset, under the lock."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from conftest import PG, Stack
from dagster import AssetKey, DagsterInstance

from ultra_ops.engine.locks import EnvironmentLock


def _dead_tuples(database: str, table: str) -> int:
    with psycopg.connect(**PG, dbname=database, autocommit=True) as conn:
        row = conn.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = %s", (table,)).fetchone()
    return int(row[0]) if row else 0


def test_vacuum_records_what_it_cleaned(stack: Stack, dagster_home: Path, capsys) -> None:
    assert stack.ops("deploy", "--tag", "v1.0.0") == 0
    with psycopg.connect(**PG, dbname=stack.database, autocommit=True) as conn:
        conn.execute("CREATE TABLE churn (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO churn SELECT i, repeat('x', 100) FROM generate_series(1, 5000) i")
        conn.execute("DELETE FROM churn WHERE id % 2 = 0")
    deadline = time.monotonic() + 30  # statistics reach pg_stat_user_tables within a second or so
    while _dead_tuples(stack.database, "churn") < 2500:
        assert time.monotonic() < deadline, "the deleted rows never showed as dead tuples"
        time.sleep(0.1)

    # Refused while another operation holds the environment, as during a restore.
    with EnvironmentLock(stack.env, operation="rollback to x", run_id="restore-run"):
        assert stack.ops("vacuum") == 1
    assert "restore-run" in capsys.readouterr().err
    assert _dead_tuples(stack.database, "churn") >= 2500

    assert stack.ops("vacuum") == 0
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        event = instance.get_latest_materialization_event(AssetKey("database_maintenance"))
        run = instance.get_run_by_id(event.run_id)
    materialization = event.asset_materialization
    assert materialization.partition == "staging" and run.tags["ultra_ops/environment"] == "staging"
    meta = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    assert meta["dead_tuples_before"] >= 2500 and meta["dead_tuples_after"] < meta["dead_tuples_before"]
    churn = next(t for t in meta["report"]["before"] if t["table"] == "public.churn")
    assert churn["dead_ratio"] >= 0.45
    after = next(t for t in meta["report"]["after"] if t["table"] == "public.churn")
    assert after["dead"] == 0 and after["last_vacuum"] is not None and after["last_analyze"] is not None
    assert meta["database_size_bytes"] > 0 and meta["duration_s"] >= 0
