"""Rollback: put an environment back to a backup, restart it and verify it.

Checksums are checked before anything stops, so a damaged backup is refused while the
environment is still running as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ultra_ops.engine.backups.restore import restore_backup
from ultra_ops.engine.backups.store import BackupInfo, get_backup, list_backups, verify_backup
from ultra_ops.engine.envfile import read_env_file
from ultra_ops.engine.errors import InputError, VerificationFailed
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment
from ultra_ops.engine.verify.report import VerifyReport
from ultra_ops.engine.verify.runner import verify_environment


@dataclass(frozen=True)
class RollbackResult:
    backup_id: str
    version: str | None
    safety_backup_id: str | None
    report: VerifyReport | None

    def to_dict(self) -> dict:
        return {"backup_id": self.backup_id, "version": self.version,
                "safety_backup_id": self.safety_backup_id,
                "verification": self.report.to_dict() if self.report else None}


def choose_backup(env: Environment, backup_id: str | None = None) -> BackupInfo:
    """The named backup, or the newest one; InputError when there is none to choose."""
    if backup_id is not None:
        return get_backup(env, backup_id)
    backups = list_backups(env)
    if not backups:
        raise InputError(f"environment {env.name} has no backups to roll back to")
    return backups[0]


def deployed_version(env: Environment) -> str | None:
    """The version the environment's env file says is deployed."""
    return read_env_file(env.env_file).get("ULTRA_VERSION") or None


def restart(env: Environment, version: str | None, *, compose_file: Path | None = None,
            log: Log, redact: Redactor) -> None:
    runtime = get_runtime(env, compose_file=compose_file, log=log, redact=redact)
    runtime.up(version or "latest")
    runtime.wait_healthy(env.health_timeout_s)


def rollback(
    env: Environment,
    backup_id: str,
    *,
    compose_file: Path | None = None,
    log: Log | None = None,
    redact: Redactor | None = None,
    verify: bool = True,
) -> RollbackResult:
    """Restore `backup_id` (after a safety backup), restart the services and verify them."""
    log = log or NullLog()
    redact = redact or Redactor.for_environment(env)
    info = verify_backup(env, backup_id)
    log.info(f"backup {info.id} ({info.version or 'no version'}) checks out; stopping {env.name}")
    get_runtime(env, compose_file=compose_file, log=log, redact=redact).down()
    restored = restore_backup(env, info.id, log=log, redact=redact, verified=info)
    # The env file just restored says which version ran when the backup was taken.
    version = deployed_version(env) or info.version
    log.info(f"restored backup {info.id}; starting {env.name} at {version}")
    restart(env, version, compose_file=compose_file, log=log, redact=redact)
    report = verify_environment(env, redact=redact, log=log) if verify else None
    result = RollbackResult(info.id, version, restored.get("safety_backup_id"), report)
    if report is not None and not report.ok:
        raise VerificationFailed(f"rolled back {env.name} to backup {info.id} but verification failed: "
                                 + report.summary())
    return result
