"""The backups domain's jobs."""

from ultra_ops.defs.backups import ops
from ultra_ops.defs.release.jobs import release_job


@release_job(description="Take a backup of an environment: database dump and state files, checksummed.")
def backup_job() -> None:
    ops.backup_create()


BACKUP_JOBS = [backup_job]
