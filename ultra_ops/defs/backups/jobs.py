"""The backups domain's jobs."""

from ultra_ops.defs.backups import ops
from ultra_ops.defs.shared.jobs import environment_job


@environment_job("backups", "backup")
def backup_job() -> None:
    """Take a backup of an environment: database dump and state files, checksummed."""
    ops.backup_create()


@environment_job("backups", "recover")
def recover_job() -> None:
    """Recover an environment after a crashed run: finish or undo its database swap, drop scratch
    databases and temp folders (every operation under the environment's lock does this first)."""
    ops.recover_environment()


BACKUP_JOBS = [backup_job, recover_job]
