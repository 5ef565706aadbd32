"""Release records in the engine: the SQLite store, its queries, and what a killed writer leaves."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ultra_ops.defs.shared.tags import launched_by
from ultra_ops.engine.clock import utc_timestamp
from ultra_ops.engine.errors import InputError
from ultra_ops.engine.release.records import (
    ReleaseRecord,
    ReleaseStatus,
    find_releases,
    last_release,
    record_release,
    releases_path,
)
from ultra_ops.engine.settings import Environment, load_settings
from ultra_ops_tests.support.configs import write_config
from ultra_ops_tests.support.services import REPO

pytestmark = pytest.mark.unit


@pytest.fixture
def env(tmp_path: Path) -> Environment:
    # The records need only the environment's folders: no database is opened.
    return load_settings(write_config(tmp_path, "uo_records_unused")).environment("staging")


def _record(
    env: Environment,
    operation: str,
    version: str | None,
    previous: str | None,
    status: ReleaseStatus | str,
    **extra: object,
) -> ReleaseRecord:
    fields = {
        "environment": env.name,
        "operation": operation,
        "version": version,
        "previous_version": previous,
        "status": status,
        "started_at": utc_timestamp(),
        "ended_at": utc_timestamp(),
        **extra,
    }
    return ReleaseRecord(**fields)  # type: ignore[arg-type]


def test_records_round_trip_and_queries(env: Environment) -> None:
    assert find_releases(env) == [] and last_release(env) is None
    assert not releases_path(env).exists()  # a query creates nothing

    first = _record(
        env, "deploy", "v1.0.0", None, "deployed", commit="a" * 40, backup_id="b1", run_id="r1", launched_by="alice"
    )
    failed = _record(
        env,
        "deploy",
        "v1.1.0",
        "v1.0.0",
        ReleaseStatus.FAILED,
        run_id="r2",
        launched_by="ui",
        reason="pre-release checklist failed: .env.staging is wider than 0600",
    )
    rolled = _record(
        env,
        "deploy",
        "v1.1.0",
        "v1.0.0",
        ReleaseStatus.ROLLED_BACK,
        backup_id="b2",
        run_id="r3",
        launched_by="schedule:staging_release_schedule",
        reason="verification failed",
    )
    manual = _record(
        env,
        "rollback",
        "v1.0.0",
        "v1.0.0",
        ReleaseStatus.ROLLBACK_FAILED,
        backup_id="b1",
        run_id="r4",
        launched_by="bob",
        reason="restore failed",
    )
    for record in (first, failed, rolled, manual):
        record_release(env, record)

    assert first.status is ReleaseStatus.DEPLOYED  # a plain string is read as the enum
    assert find_releases(env) == [manual, rolled, failed, first]  # newest first, every field kept
    assert find_releases(env, version="v1.1.0") == [rolled, failed]
    assert find_releases(env, status=ReleaseStatus.DEPLOYED) == [first]
    assert find_releases(env, status="rollback_failed", operation="rollback") == [manual]
    assert find_releases(env, version="v1.1.0", status="failed") == [failed]
    assert find_releases(env, operation="deploy", limit=2) == [rolled, failed]
    assert find_releases(env, run_id="r1") == [first]
    assert find_releases(env, version="v9.9.9") == []
    assert last_release(env) == manual
    assert last_release(env, operation="deploy", status="deployed") == first
    assert manual.to_dict()["status"] == "rollback_failed" and manual.to_dict()["operation"] == "rollback"

    assert releases_path(env).stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(releases_path(env)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(releases)")}
        columns = {name: [r[2] for r in conn.execute(f"PRAGMA index_info({name})")] for name in indexes}
    assert ["environment", "version"] in columns.values() and ["status"] in columns.values()


def test_a_record_is_typed(env: Environment) -> None:
    with pytest.raises(InputError, match="release status 'deploy_failed'"):
        _record(env, "deploy", "v1.0.0", None, "deploy_failed")
    with pytest.raises(InputError, match="release operation 'restore'"):
        _record(env, "restore", "v1.0.0", None, "deployed")
    with pytest.raises(TypeError):
        ReleaseRecord(
            env.name,
            "deploy",
            "v1.0.0",
            None,
            "deployed",
            None,
            None,
            None,
            None,  # type: ignore[misc]
            utc_timestamp(),
            utc_timestamp(),
            None,
        )
    assert find_releases(env) == []


def test_a_writer_killed_mid_stream_leaves_only_whole_records(env: Environment) -> None:
    code = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from ultra_ops.engine.clock import utc_timestamp
from ultra_ops.engine.release.records import ReleaseRecord, record_release
from ultra_ops.engine.settings import load_settings
env = load_settings({str(env.config_file)!r}).environment("staging")
n = 0
while True:
    n += 1
    record_release(env, ReleaseRecord(environment="staging", operation="deploy", version=f"v1.0.{{n}}",
                   previous_version=f"v1.0.{{n - 1}}", status="deployed", run_id=f"run-{{n}}",
                   launched_by="writer", started_at=utc_timestamp(), ended_at=utc_timestamp(),
                   reason="x" * 4000))
"""
    writer = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while len(find_releases(env, limit=30)) < 30:
            assert writer.poll() is None and time.monotonic() < deadline, "the writer never wrote 30 records"
            time.sleep(0.01)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    records = find_releases(env)
    assert len(records) >= 30
    numbers = [int(r.version.rsplit(".", 1)[1]) for r in records if r.version]
    assert numbers == list(range(len(records), 0, -1))  # no gap, no torn or half-written record
    assert all(
        r.reason == "x" * 4000 and r.run_id == f"run-{n}" and r.previous_version == f"v1.0.{n - 1}"
        for r, n in zip(records, numbers, strict=True)
    )
    with sqlite3.connect(releases_path(env)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    record_release(env, _record(env, "rollback", "v1.0.1", None, "rolled_back"))  # still writable
    assert last_release(env).operation == "rollback"


@pytest.mark.parametrize(
    ("tags", "who"),
    [
        ({"ultra_ops/launched_by": "alice", "dagster/schedule_name": "staging_release_schedule"}, "alice"),
        ({"dagster/schedule_name": "staging_release_schedule"}, "schedule:staging_release_schedule"),
        ({"dagster/sensor_name": "rollback_after_failed_deploy"}, "sensor:rollback_after_failed_deploy"),
        ({"ultra_ops/environment": "staging"}, "ui"),
        ({}, "ui"),
    ],
)
def test_who_launched_a_run_comes_from_its_tags(tags: dict[str, str], who: str) -> None:
    assert launched_by(tags) == who
