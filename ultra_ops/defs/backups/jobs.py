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


BACKUP_JOBS = [backup_job, recover_job, prune_job, pin_job, verify_backups_job]
