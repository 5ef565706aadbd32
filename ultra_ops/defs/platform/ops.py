"""Ops of the platform domain: they work on the Dagster instance itself, not on an environment."""

import os
import time
from datetime import UTC, datetime
from pathlib import Path

from dagster import Config, DagsterRunStatus, Failure, MetadataValue, OpExecutionContext, RunsFilter, op

from ultra_ops.defs.shared.location import loaded_settings
from ultra_ops.defs.shared.steps import failures_as_dagster
from ultra_ops.engine.backups.platform_storage import dump_storage
from ultra_ops.engine.clock import local_time

FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
_BATCH = 100


class PurgeRunsConfig(Config):
    older_than_days: float = 90.0  # finished runs created longer ago than this are deleted with their events
    dry_run: bool = False


class PlatformBackupConfig(Config):
    folder: str = ""  # empty: $DAGSTER_HOME/backups
    keep: int = 7


@op
def purge_old_runs(context: OpExecutionContext, config: PurgeRunsConfig) -> None:
    """Delete finished runs older than `older_than_days`, with their event logs: the event log does
    not grow without bound. Runs queued or in progress are never touched."""
    if not config.older_than_days >= 0:
        raise Failure(
            description=f"older_than_days: {config.older_than_days} is not a number of days >= 0", allow_retries=False
        )
    instance = context.instance
    before = datetime.fromtimestamp(time.time() - config.older_than_days * 86400, UTC)
    filters = RunsFilter(statuses=FINISHED, created_before=before)
    matching = instance.get_runs_count(filters)
    deleted = 0
    while not config.dry_run:
        ids = [r.dagster_run.run_id for r in instance.get_run_records(filters=filters, limit=_BATCH)]
        for run_id in ids:
            instance.delete_run(run_id)
        deleted += len(ids)
        if len(ids) < _BATCH:
            break
    verb = f"would delete {matching}" if config.dry_run else f"deleted {deleted}"
    settings = loaded_settings()  # the one time zone of the config, where there is one
    context.log.info(
        f"{verb} finished run(s) created before {local_time(before, settings.timezone if settings else 'UTC')}"
    )
    context.add_output_metadata(
        {
            "runs_deleted": deleted,
            "runs_matching": matching,
            "older_than_days": config.older_than_days,
            "dry_run": config.dry_run,
        }
    )


@op
def backup_dagster_storage(context: OpExecutionContext, config: PlatformBackupConfig) -> None:
    """pg_dump Dagster's own PostgreSQL into a folder, newest `keep` kept."""
    storage = context.instance.run_storage
    url = getattr(storage, "postgres_url", None)
    if not url:
        raise Failure(
            description=f"Dagster's storage is not PostgreSQL ({type(storage).__name__}): back up "
            f"{context.instance.root_directory} as files instead",
            allow_retries=False,
        )
    folder = Path(config.folder) if config.folder else Path(os.environ.get("DAGSTER_HOME", ".")) / "backups"
    with failures_as_dagster():
        result = dump_storage(url, folder, keep=config.keep, log=context.log)
    context.add_output_metadata(
        {
            "file": result["file"],
            "bytes": result["bytes"],
            "sha256": result["sha256"],
            "removed": MetadataValue.json(result["removed"]),
        }
    )
