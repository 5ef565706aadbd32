"""The backups asset: every backup a materialization of its environment's day, the asset checks
(each shown red on a backup built to fail it), and the restore test backfilled over days."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from dagster import AssetKey, DagsterInstance, build_schedule_context
from dagster._core.storage.event_log.base import AssetRecordsFilter

from ultra_ops.engine.backups.checksums import hash_files, walk_files
from ultra_ops.engine.backups.create import create_backup
from ultra_ops.engine.backups.store import BackupInfo, get_backup, list_backups
from ultra_ops.engine.settings import Environment
from ultra_ops_tests.support.services import PG, REPO
from ultra_ops_tests.support.stack import Stack


def _materializations(home: Path, key: str) -> list:
    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey(key)), limit=100).records
        return [r.event_log_entry.asset_materialization for r in records]


def _meta(materialization) -> dict:
    return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}


def _churn(database: str, rows: int = 500) -> None:
    with psycopg.connect(**PG, dbname=database, autocommit=True) as conn:
        conn.execute("CREATE TABLE churn (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO churn SELECT i, 'x' FROM generate_series(1, %s) i", (rows,))


def _without_table(env: Environment, info: BackupInfo, table: str) -> None:
    """Rebuild the backup's dump without `table`, checksums rewritten to match: a backup whose dump
    lacks a table that was there (and counted) when it was taken."""
    dump = info.path / "database"
    shutil.rmtree(dump)
    subprocess.run(
        [
            "pg_dump",
            "-Fd",
            "-f",
            str(dump),
            "-T",
            table,
            "-h",
            PG["host"],
            "-p",
            str(PG["port"]),
            "-U",
            PG["user"],
            env.database.name,
        ],
        check=True,
        timeout=120,
    )
    manifest = json.loads((info.path / "manifest.json").read_text())
    files = {rel: v for rel, v in manifest["files"].items() if not rel.startswith("database/")}
    files.update(hash_files(info.path, [rel for rel in walk_files(info.path) if rel.startswith("database/")]))
    manifest["files"] = files
    (info.path / "manifest.json").write_text(json.dumps(manifest))


def _edit_manifest(info: BackupInfo, **changes: object) -> None:
    manifest = json.loads((info.path / "manifest.json").read_text())
    manifest.update(changes)
    (info.path / "manifest.json").write_text(json.dumps(manifest))


def test_every_kind_of_backup_is_a_materialization_of_its_day(
    stack: Stack, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ULTRA_OPS_CONFIG", str(stack.config))
    assert stack.ops("deploy", "--tag", "v1.0.0") == 0  # kind deploy
    assert stack.ops("backups", "create") == 0  # kind manual
    manual = next(b for b in list_backups(stack.env) if b.kind == "manual")
    assert stack.ops("rollback", "--backup", manual.id, "--yes") == 0  # kind safety

    # The nightly schedule's tick, launched as the daemon launches it: kind scheduled, with its checks.
    from ultra_ops.definitions import defs
    from ultra_ops.defs.backups.schedules import backup_schedules
    from ultra_ops.defs.shared.launch import launch
    from ultra_ops.defs.shared.tags import PARTITION, SCHEDULE

    now = datetime.now(UTC)
    with DagsterInstance.get() as instance:
        context = build_schedule_context(
            instance=instance, scheduled_execution_time=now, repository_def=defs.get_repository_def()
        )
        [request] = backup_schedules()[0].evaluate_tick(context).run_requests
        result = launch(
            "nightly_backup_job",
            {},
            {**request.tags, PARTITION: str(request.partition_key), SCHEDULE: "nightly_backup_schedule"},
            instance=instance,
        )
        yesterday = f"{now - timedelta(days=1):%Y-%m-%d}|staging"
        past = launch("nightly_backup_job", {}, {**request.tags, PARTITION: yesterday}, instance=instance)
    assert not past.success and f"materialize today's partition ({now:%Y-%m-%d}|staging)" in past.message
    assert result.success, result.message
    assert {c["name"]: c["passed"] for c in result.checks} == {
        "backup_checksums": True,
        "backup_dump_readable": True,
        "backup_restore_test": True,
        "backup_freshness": True,
    }

    today = f"{now:%Y-%m-%d}|staging"
    found = {_meta(m)["backup_id"]: m for m in _materializations(dagster_home, "backups")}
    backups = {b.id: b for b in list_backups(stack.env)}
    assert set(found) == set(backups)  # every backup there is, and nothing else
    assert sorted(_meta(m)["kind"] for m in found.values()) == ["deploy", "manual", "safety", "scheduled"]
    for backup_id, materialization in found.items():
        meta = _meta(materialization)
        assert str(materialization.partition) == today
        assert meta["size_bytes"] == backups[backup_id].size_bytes and meta["size"].endswith("KB")
        assert meta["duration_s"] > 0 and meta["mb_per_s"] > 0
        assert meta["tables"] == len(backups[backup_id].tables) and meta["row_counts"] == backups[backup_id].tables
        # The deploy's backup is of the empty database, before its migrations created the tables.
        assert meta["tables"] == 0 if meta["kind"] == "deploy" else meta["tables"] >= 2
    by_kind = {_meta(m)["kind"]: _meta(m) for m in found.values()}
    assert by_kind["deploy"]["release_version"] == "" and by_kind["manual"]["release_version"] == "v1.0.0"
    assert by_kind["scheduled"]["row_counts"]["public.prompts"] > 0


def test_every_check_goes_red_on_a_backup_built_to_fail_it(
    tmp_path: Path, pg_database: str, dagster_home: Path, capsys
) -> None:
    stack = Stack(tmp_path, pg_database)
    _churn(pg_database)
    good = create_backup(stack.env, compression=0)
    lacking = create_backup(stack.env, compression=0)
    _without_table(stack.env, lacking, "churn")

    assert stack.ops("backups", "verify", "--backup", "20990101T000000Z-dead", "--restore-test") == 2

    # The dump lacks a table: checksums hold (rewritten), the table of contents and the restore test name it.
    assert stack.ops("backups", "verify", "--backup", lacking.id, "--restore-test") == 1
    out = capsys.readouterr().out
    assert f"backup_checksums: ok: staging: backup {lacking.id}" in out
    assert "backup_dump_readable: FAILED" in out and "the dump has no data for public.churn" in out
    assert "backup_restore_test: FAILED" in out and "missing tables: public.churn" in out
    assert "backup_freshness: ok" in out

    # Fewer rows restored than counted at backup time.
    miscounted = get_backup(stack.env, good.id)
    _edit_manifest(miscounted, tables={**miscounted.tables, "public.churn": 501})
    assert stack.ops("backups", "verify", "--backup", good.id, "--restore-test") == 1
    assert "public.churn (501 at backup time, 500 restored)" in capsys.readouterr().out

    # A flipped byte: the checksums check (and verify) fail.
    data = next(p for p in sorted((lacking.path / "database").iterdir()) if p.name.endswith(".dat"))
    data.write_bytes(bytes([data.read_bytes()[0] ^ 1]) + data.read_bytes()[1:])
    assert stack.ops("backups", "verify", "--backup", lacking.id, "--restore-test") == 1
    assert f"backup_checksums: FAILED: staging: backup {lacking.id}: checksum mismatch" in capsys.readouterr().out

    # Old backups only: freshness is red, with the newest good one's age.
    for info in list_backups(stack.env):
        _edit_manifest(info, created_at=(datetime.now(UTC) - timedelta(hours=30)).isoformat())
    assert stack.ops("backups", "verify", "--backup", good.id, "--restore-test") == 1
    out = capsys.readouterr().out
    assert f"backup_freshness: FAILED: staging: newest good backup {good.id} is 30.0 h old (past the 26 h limit)" in out

    # No scratch database of the restore tests is left, failed or not.
    with psycopg.connect(**PG, dbname="postgres") as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (pg_database + "__%",)).fetchall()
    assert left == []


def test_restore_test_backfill_over_days(tmp_path: Path, pg_database: str, dagster_home: Path) -> None:
    stack = Stack(tmp_path, pg_database)
    _churn(pg_database)
    today = date.today()
    days = [today - timedelta(days=n) for n in (3, 2, 1)]
    for n, day in enumerate(days):
        info = create_backup(stack.env, compression=0)
        if n == 0:
            _without_table(stack.env, info, "churn")
        _edit_manifest(info, created_at=datetime(day.year, day.month, day.day, 1, 30, tzinfo=UTC).isoformat())

    # As an operator backfills it: one run over the range, with the dagster CLI.
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "ULTRA_OPS_CONFIG": str(stack.config)}
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "asset",
            "materialize",
            "-m",
            "ultra_ops.definitions",
            "--select",
            "backup_restore_test",
            "--partition-range",
            f"{days[0]}|staging...{days[2]}|staging",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0  # the first day's backup lacks a table
    assert f"{days[0]}|staging: backup " in proc.stdout + proc.stderr
    assert "missing tables: public.churn" in proc.stdout + proc.stderr
    done = {str(m.partition): _meta(m) for m in _materializations(dagster_home, "backup_restore_test")}
    assert set(done) == {f"{days[1]}|staging", f"{days[2]}|staging"}
    assert all(meta["passed"] and meta["row_counts"]["public.churn"] == 500 for meta in done.values())


@pytest.mark.unit
def test_backups_asset_is_declared_with_its_checks_and_nightly_job() -> None:
    from ultra_ops.definitions import defs
    from ultra_ops.defs.backups.schedules import backup_schedules
    from ultra_ops.defs.shared.partitions import environment_days_to_date

    graph = defs.get_repository_def().asset_graph
    for key in ("backups", "backup_restore_test"):
        node = graph.get(AssetKey(key))
        assert node.group_name == "backups" and node.owners == ["team:ops"] and node.description
        assert node.partitions_def == environment_days_to_date
    # Today is a partition: `dagster asset materialize --select backups --partition TODAY|ENV` takes a backup now.
    today = datetime.now(ZoneInfo(environment_days_to_date.partitions_defs[0].partitions_def.timezone)).date()
    assert f"{today:%Y-%m-%d}|development" in environment_days_to_date.get_partition_keys()
    assert {k.name for k in graph.get_check_keys_for_assets([AssetKey("backups")])} == {
        "backup_checksums",
        "backup_dump_readable",
        "backup_restore_test",
        "backup_freshness",
    }
    [nightly] = backup_schedules()
    assert nightly.name == "nightly_backup_schedule" and nightly.job_name == "nightly_backup_job"


@pytest.mark.parametrize("fmt", ["directory", "custom"])
def test_a_killed_restore_test_leaves_nothing_behind(tmp_path: Path, pg_database: str, fmt: str) -> None:
    """The scratch database of a restore test whose process died is dropped by the next one (which
    restores either dump format)."""
    from ultra_ops.engine.backups.trial_restore import restore_test

    stack = Stack(tmp_path, pg_database)
    _churn(pg_database)
    info = create_backup(stack.env, compression=0, format=fmt)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True, timeout=60
    )
    scratch = f"{pg_database}__rtest_deadbeef"
    with psycopg.connect(**PG, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{scratch}"')
    records = stack.env.state_dir / "restore-tests"
    records.mkdir(parents=True)
    (records / f"{scratch}.json").write_text(
        json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "start": "1"})
    )
    report = restore_test(stack.env, info)
    assert report.passed and report.restored == {"public.churn": 500}
    with psycopg.connect(**PG, dbname="postgres") as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (pg_database + "__%",)).fetchall()
    assert left == [] and not list(records.iterdir())


@pytest.mark.unit
def test_restore_test_runs_weekly_on_each_environments_newest_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ultra_ops.defs.backups.schedules import restore_test_schedules
    from ultra_ops_tests.support.configs import write_multi_config

    config = write_multi_config(tmp_path, {"staging": "uo_unused_s", "production": "uo_unused_p"}, redis_prefix="x:")
    text = config.read_text().replace(
        'timezone = "UTC"\n',
        'timezone = "Europe/Berlin"\n\n[calendar]\nweekly_restore_test = { day = "sunday", time = "05:30" }\n'
        '[calendar.automations]\nweekly_restore_test_schedule = "running"\n',
        1,
    )
    config.write_text(text)
    monkeypatch.setenv("ULTRA_OPS_CONFIG", str(config))
    (schedule,) = restore_test_schedules()
    assert schedule.cron_schedule == "30 5 * * 0" and schedule.execution_timezone == "Europe/Berlin"
    assert schedule.default_status.value == "RUNNING" and schedule.job_name == "backup_checks_job"
    assert schedule.description.startswith("Every Sunday at 05:30 Europe/Berlin: the restore test")
    when = datetime(2026, 12, 6, 5, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    requests = schedule.evaluate_tick(build_schedule_context(scheduled_execution_time=when)).run_requests
    # One run per environment, tagged with it (the checks refuse a run without), the restore test only.
    assert {r.tags["ultra_ops/environment"]: [k.name for k in r.asset_check_keys] for r in requests} == {
        "staging": ["backup_restore_test"],
        "production": ["backup_restore_test"],
    }
    assert len({r.run_key for r in requests}) == 2
