"""Database maintenance: VACUUM ANALYZE as the database_maintenance asset, under the lock."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import psycopg
from dagster import AssetKey, DagsterEventType, DagsterInstance

from ultra_ops.engine.locks import EnvironmentLock
from ultra_ops_tests.support.services import PG
from ultra_ops_tests.support.stack import Stack


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
        assert stack.ops("maintenance", "vacuum") == 1
    assert "restore-run" in capsys.readouterr().err
    assert _dead_tuples(stack.database, "churn") >= 2500

    assert stack.ops("maintenance", "vacuum") == 0
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


def test_cache_stats_and_a_pattern_clear(tmp_path: Path, pg_database: str, dagster_home: Path, capsys) -> None:
    """A Redis database of the test's own: clear by pattern leaves the other keys; stats and checks."""
    import redis as redis_lib

    # A database no other test uses (the others share 0-2 under key prefixes): --flush-all empties it.
    # Chosen at random so two test runs on one machine do not meet either.
    db = random.randint(10, 15)
    client = redis_lib.Redis.from_url(f"redis://127.0.0.1:6379/{db}")
    client.flushdb()
    stack = Stack(tmp_path, pg_database)
    stack.config.write_text(
        stack.config.read_text().replace('url = "redis://127.0.0.1:6379/0"', f'url = "redis://127.0.0.1:6379/{db}"')
    )
    try:
        client.mset({f"ultra:cache:{i}": "x" for i in range(1200)} | {f"ultra:session:{i}": "y" for i in range(30)})
        assert stack.ops("maintenance", "cache-clear") == 2  # neither a pattern nor --flush-all
        assert stack.ops("maintenance", "cache-clear", "--pattern", "ultra:cache:*") == 0
        assert client.dbsize() == 30 and not list(client.scan_iter(match="ultra:cache:*"))
        capsys.readouterr()
        assert stack.ops("maintenance", "cache-stats") == 0
        stats = json.loads(capsys.readouterr().out.split("\ncache-stats")[0])
        assert stats["environment"] == "staging" and stats["keys_per_db"][f"db{db}"] == 30
        assert stats["used_memory"] > 0 and stats["used_memory_human"]
        with DagsterInstance.from_config(str(dagster_home)) as instance:
            event = instance.get_latest_materialization_event(AssetKey("cache_state"))
            assert event.asset_materialization.partition == "staging"
            checks = {
                e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data.passed
                for e in instance.all_logs(event.run_id)
                if e.dagster_event and e.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION
            }
        assert checks == {
            "cache_memory_headroom": True,
            "cache_no_evictions": stats["evicted_keys"] == 0,
            "cache_hit_ratio": checks["cache_hit_ratio"],
        }
        assert stack.ops("maintenance", "cache-clear", "--flush-all") == 0
        assert client.dbsize() == 0
    finally:
        client.flushdb()
        stack.stop()


def test_log_archive_backfill_of_three_days(stack: Stack, dagster_home: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    from datetime import datetime

    logs = stack.env.log_dir
    logs.mkdir(parents=True, exist_ok=True)
    days = ["20261124", "20261125", "20261126"]
    contents = {}
    for day in days:
        for name in ("backend", "worker"):
            path = logs / f"{name}.log.{day}"
            path.write_text("".join(f"{day} {name} line {i}\n" for i in range(2000)))
            contents[path.name] = path.read_bytes()
    # Today's active log, last written on the 26th: rotated beside that day's file (backend.log.20261126.1),
    # then archived with it.
    active = logs / "backend.log"
    active.write_text("late lines of the 26th\n")
    stamp = datetime(2026, 11, 26, 23, 0).timestamp()
    os.utime(active, (stamp, stamp))
    untouched = logs / "backend.out"  # the service's output file is the runtime's, not a log to rotate
    untouched.write_text("output\n")

    for day in ("2026-11-24", "2026-11-25", "2026-11-26"):
        assert stack.ops("maintenance", "archive-logs", "--day", day) == 0
    archive_dir = logs / "archive"
    assert sorted(p.name for p in archive_dir.iterdir()) == [f"logs_{d}.tar.gz" for d in days]
    assert not list(logs.glob("*.log.*")) and not active.exists() and untouched.exists()
    out = tmp_path / "extracted"
    out.mkdir()
    for day in days:  # the release document's manual step reads them
        subprocess.run(["tar", "-xzf", str(archive_dir / f"logs_{day}.tar.gz"), "-C", str(out)], check=True, timeout=60)
    for name, data in contents.items():
        extracted = (out / name).read_bytes()
        assert extracted == data
    assert (out / "backend.log.20261126.1").read_bytes() == b"late lines of the 26th\n"
    assert stack.ops("maintenance", "archive-logs", "--day", "2026-11-25") == 0  # again: nothing new, nothing lost
    assert sorted(p.name for p in archive_dir.iterdir()) == [f"logs_{d}.tar.gz" for d in days]
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        event = instance.get_latest_materialization_event(AssetKey("log_archive"))
    assert event.asset_materialization.partition is not None
    assert stack.ops("maintenance", "archive-logs", "--day", "26-11-2026") == 2


def test_service_status_shows_state_cpu_and_memory(stack: Stack, capsys) -> None:
    assert stack.ops("deploy", "--tag", "v1.0.0") == 0
    capsys.readouterr()
    assert stack.ops("maintenance", "status") == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("backend"))
    assert " up " in line and "mem " in line and "MB" in line and "version v1.0.0" in line
    stack.stop()
    assert stack.ops("maintenance", "status") == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("backend"))
    assert "exited" in line and "not running" in line


def test_a_day_with_nothing_to_archive_claims_no_archive(stack: Stack, dagster_home: Path) -> None:
    stack.env.log_dir.mkdir(parents=True, exist_ok=True)
    assert stack.ops("maintenance", "archive-logs", "--day", "2026-11-20") == 0
    assert not (stack.env.log_dir / "archive" / "logs_20261120.tar.gz").exists()
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        assert instance.get_latest_materialization_event(AssetKey("log_archive")) is None  # no green "Materialized"
        (record,) = instance.fetch_observations(AssetKey("log_archive"), limit=10).records
        observation = record.asset_observation
    assert observation.partition == "2026-11-20|staging" and observation.description == "nothing to archive"
    assert observation.metadata["status"].value == "nothing to archive" and "archive" not in observation.metadata
