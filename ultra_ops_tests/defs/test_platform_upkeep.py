"""Operating the platform: old runs purged with their events, Dagster's own PostgreSQL backed up."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, job, op

from ultra_ops.defs.platform.jobs import purge_runs_job
from ultra_ops.engine.backups.platform_storage import dump_storage, list_dumps, storage_params
from ultra_ops.engine.errors import BackupError, InputError
from ultra_ops_tests.support.services import PG


@op
def noop() -> None:
    pass


@job
def probe() -> None:
    noop()


def _purge(instance: DagsterInstance, days: float, dry_run: bool = False):  # noqa: ANN202
    config = {"ops": {"purge_old_runs": {"config": {"older_than_days": days, "dry_run": dry_run}}}}
    return purge_runs_job.execute_in_process(run_config=config, instance=instance, raise_on_error=False)


def _metadata(result) -> dict:  # noqa: ANN001
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in event.event_specific_data.metadata.items()}


@pytest.mark.unit
def test_purge_deletes_finished_runs_and_their_events_only(tmp_path: Path) -> None:
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        finished = [probe.execute_in_process(instance=instance).run_id for _ in range(3)]
        in_progress = instance.create_run_for_job(probe, status=DagsterRunStatus.STARTED).run_id

        kept = _purge(instance, 1)  # everything is younger than a day
        assert kept.success and _metadata(kept)["runs_deleted"] == 0
        dry = _purge(instance, 0, dry_run=True)
        assert _metadata(dry)["runs_matching"] >= 3 and _metadata(dry)["runs_deleted"] == 0
        assert all(instance.get_run_by_id(r) for r in finished)

        result = _purge(instance, 0)
        assert result.success
        for run_id in finished:
            assert instance.get_run_by_id(run_id) is None
            assert not instance.all_logs(run_id)  # the event log goes with the run
        assert instance.get_run_by_id(in_progress) is not None  # never a run in progress
        assert instance.get_run_by_id(result.run_id) is not None  # nor the purge itself

        bad = _purge(instance, -1)
        assert not bad.success


def test_storage_backup_dumps_keeps_the_newest_and_names_no_password(tmp_path: Path, pg_database: str) -> None:
    url = f"postgresql+psycopg2://{PG['user']}:s3cret-pass-123@{PG['host']}:{PG['port']}/{pg_database}"
    assert storage_params(url)["dbname"] == pg_database
    folder = tmp_path / "dagster_backups"
    first = dump_storage(url, folder, keep=2)
    dump_storage(url, folder, keep=2)
    third = dump_storage(url, folder, keep=2)
    assert [p.name for p in list_dumps(folder)][0] == Path(third["file"]).name
    assert len(list_dumps(folder)) == 2 and Path(first["file"]).name in third["removed"]
    listing = subprocess.run(["pg_restore", "--list", third["file"]], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and pg_database in listing.stdout
    with pytest.raises(InputError):
        dump_storage(url, folder, keep=0)
    with pytest.raises(BackupError) as failed:
        dump_storage(url.replace(pg_database, pg_database + "_missing"), folder, keep=2)
    assert "s3cret-pass-123" not in str(failed.value)
    assert len(list_dumps(folder)) == 2  # nothing half written
