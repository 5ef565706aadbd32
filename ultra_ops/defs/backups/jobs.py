"""The backups domain's jobs."""

from dagster import AssetSelection, define_asset_job, in_process_executor

from ultra_ops.defs.backups import ops
from ultra_ops.defs.backups.assets import backup_restore_test, backups
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.jobs import environment_job
from ultra_ops.defs.shared.partitions import environment_day_config, environment_days_to_date


@environment_job("backups", "backup")
def backup_job() -> None:
    """Take a backup of an environment now: database dump and state files, checksummed; recorded as a
    (manual) materialization of the backups asset."""
    ops.backup_create()


nightly_backup_job = define_asset_job(
    "nightly_backup_job",
    selection=AssetSelection.assets(backups),  # with its checks
    config=environment_day_config(environment_days_to_date),
    executor_def=in_process_executor,  # the backup step's lock is held by the run's process
    tags={tags.DOMAIN: "backups", tags.OPERATION: "backup"},
    description="Materialize today's backups partition of an environment (a scheduled backup), then check it: "
    "checksums, pg_restore --list, the restore test, freshness.",
)

backup_checks_job = define_asset_job(
    "backup_checks_job",
    selection=AssetSelection.checks_for_assets(backups),
    executor_def=in_process_executor,
    tags={tags.DOMAIN: "backups", tags.OPERATION: "check backups"},
    description="The backups asset's checks on the newest backup of the run's environment (tag "
    f"{tags.ENVIRONMENT}), or of every environment: checksums, pg_restore --list, restore test, "
    "freshness.",
)

backup_restore_test_job = define_asset_job(
    # No partitioned config (tags per partition): Dagster refuses one where a run covers several partitions.
    "backup_restore_test_job",
    selection=[backup_restore_test],
    executor_def=in_process_executor,
    tags={tags.DOMAIN: "backups", tags.OPERATION: "restore test"},
    description="Restore-test the newest backup of a day and environment; backfill it over a range of days.",
)


@environment_job("backups", "recover")
def recover_job() -> None:
    """Recover an environment after a crashed run: finish or undo its database swap, drop scratch
    databases and temp folders (every operation under the environment's lock does this first)."""
    ops.recover_environment()


@environment_job("backups", "prune")
def prune_job() -> None:
    """Apply the environment's retention policy to its backups (dry_run shows it first)."""
    ops.backups_prune()


@environment_job("backups", "pin")
def pin_job() -> None:
    """Pin a backup so retention keeps it forever, or unpin it."""
    ops.backups_pin()


@environment_job("backups", "verify backups")
def verify_backups_job() -> None:
    """Check an environment's backups against their manifests (sizes and sha256)."""
    ops.backups_verify()


BACKUP_JOBS = [
    backup_job,
    recover_job,
    prune_job,
    pin_job,
    verify_backups_job,
    nightly_backup_job,
    backup_checks_job,
    backup_restore_test_job,
]
