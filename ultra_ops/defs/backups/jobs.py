"""The backups domain's jobs."""

from ultra_ops.defs.backups import ops
from ultra_ops.defs.shared.jobs import environment_job


@environment_job("backups", "backup")
def backup_job() -> None:
    """Take a backup of an environment: database dump and state files, checksummed."""
    ops.backup_create()


BACKUP_JOBS = [backup_job]
