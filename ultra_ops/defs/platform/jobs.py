"""The platform domain's jobs: not partitioned, they work on the Dagster instance as a whole."""

from dagster import job

from ultra_ops.defs.platform import ops
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.jobs import LOGGERS


@job(tags={tags.DOMAIN: "platform", tags.OPERATION: "purge runs"}, logger_defs=LOGGERS)
def purge_runs_job() -> None:
    """Delete finished runs older than N days (90 by default) with their event logs."""
    ops.purge_old_runs()


@job(tags={tags.DOMAIN: "platform", tags.OPERATION: "platform backup"}, logger_defs=LOGGERS)
def platform_backup_job() -> None:
    """Back up Dagster's own PostgreSQL (run history, schedule and sensor state) with pg_dump."""
    ops.backup_dagster_storage()


PLATFORM_JOBS = [purge_runs_job, platform_backup_job]
