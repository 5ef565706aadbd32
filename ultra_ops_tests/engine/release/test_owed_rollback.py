"""The rollback a deploy that lost its host owes (deploy.left_on_lost_host), done by `recover`, is
recorded as a rollback is: here on a local environment, whose run marker says what such a deploy
leaves (a host cut to get there takes minutes: hosts/test_host_faults.py does it once)."""

from __future__ import annotations

import psycopg
import pytest
from dagster import AssetKey, DagsterInstance

from ultra_ops.engine import runs
from ultra_ops.engine.backups.store import list_backups
from ultra_ops.engine.clock import utc_timestamp
from ultra_ops.engine.release.records import ReleaseRecord, ReleaseStatus, find_releases
from ultra_ops_tests.support.services import PG
from ultra_ops_tests.support.stack import Stack

DEAD_RUN = "a-deploy-that-lost-its-host"


def _owed(stack: Stack) -> str:
    """Deploy v1.0.0 and back it up; then leave the marker of a deploy of v1.1.0 that lost its host
    after that backup, and a row written since it. Returns the backup's id."""
    assert stack.ops("deploy", "--tag", "v1.0.0", "--skip-tests") == 0
    assert stack.ops("backups", "create") == 0
    backup = list_backups(stack.env)[0]
    with psycopg.connect(**PG, dbname=stack.database, autocommit=True) as conn:
        conn.execute("INSERT INTO prompts (title) VALUES ('written by the deploy that lost its host')")
    draft = ReleaseRecord(
        environment="staging",
        operation="deploy",
        version="v1.1.0",
        previous_version="v1.0.0",
        status=ReleaseStatus.INTERRUPTED,
        backup_id=backup.id,
        run_id=DEAD_RUN,
        launched_by="someone",
        started_at=utc_timestamp(),
        ended_at=utc_timestamp(),
    )
    runs.begin(stack.env, operation="deploy v1.1.0", run_id=DEAD_RUN, record=draft.to_dict())
    runs.update(stack.env, DEAD_RUN, interrupted=True, rollback_owed=backup.id, pid=None)
    return backup.id


def test_recover_records_the_owed_rollback(stack: Stack, dagster_home, capsys: pytest.CaptureFixture[str]) -> None:
    backup_id = _owed(stack)
    before = stack.rows()
    capsys.readouterr()
    assert stack.ops("recover") == 0
    out = capsys.readouterr().out
    assert f"rolled back the deploy of v1.1.0 (run {DEAD_RUN}) that lost staging's host to backup {backup_id}" in out
    assert len(stack.rows()) == len(before) - 1  # the row written after the backup is gone

    [record] = find_releases(stack.env, operation="rollback")
    assert record.status == ReleaseStatus.ROLLED_BACK
    assert (record.version, record.previous_version, record.backup_id) == ("v1.0.0", "v1.0.0", backup_id)
    assert f"the owed rollback of deploy {DEAD_RUN} (v1.1.0)" in (record.reason or ""), record
    # The run that did it: the recover run, launched from the CLI by this user.
    assert record.run_id and record.run_id != DEAD_RUN and record.launched_by
    assert record.started_at <= record.ended_at
    # The dead deploy has its own record beside it, and owes nothing any more.
    [deploy] = find_releases(stack.env, run_id=DEAD_RUN)
    assert deploy.status == ReleaseStatus.INTERRUPTED
    assert runs.read_marker(stack.env) is None
    # In the release history the UI shows: a materialization of the run that did it.
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        events = instance.fetch_materializations(AssetKey("releases"), limit=10).records
    shown = sorted(
        (m["operation"].value, m["status"].value, m["backup_id"].value)
        for m in (e.asset_materialization.metadata for e in events if e.run_id == record.run_id)
    )
    assert shown == [("deploy", "interrupted", backup_id), ("rollback", "rolled_back", backup_id)]
    # A second recover finds nothing owed.
    assert stack.ops("recover") == 0
    assert "nothing to recover" in capsys.readouterr().out
    assert len(find_releases(stack.env, operation="rollback")) == 1


def test_a_failed_owed_rollback_is_recorded_and_still_owed(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    backup_id = _owed(stack)
    [info] = [b for b in list_backups(stack.env) if b.id == backup_id]
    damaged = info.path / sorted(info.files)[0]
    damaged.write_bytes(damaged.read_bytes() + b"damage")
    before = stack.rows()
    capsys.readouterr()
    assert stack.ops("recover") == 1
    said = capsys.readouterr()
    assert f"the rollback to backup {backup_id} owed by the deploy of v1.1.0 (run {DEAD_RUN})" in said.out + said.err
    assert stack.rows() == before  # refused before anything stopped

    [record] = find_releases(stack.env, operation="rollback")
    assert record.status == ReleaseStatus.FAILED  # as a manual rollback refused at its check
    assert record.backup_id == backup_id and record.run_id and record.run_id != DEAD_RUN
    reason = record.reason or ""
    assert f"the owed rollback of deploy {DEAD_RUN} (v1.1.0)" in reason and "it is still owed" in reason, reason
    assert (runs.read_marker(stack.env) or {}).get("rollback_owed") == backup_id
