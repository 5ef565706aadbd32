"""Rollback: put an environment back to a backup, restart it and verify it.

One implementation, as steps: plan (choose the backup) → check (every checksum, before anything
stops) → stop → restore (after a safety backup) → start → verify → record. `rollback_job` runs
one step per op; `rollback()` runs the same steps in a row for a deploy's automatic rollback,
whose outcome the deploy records as its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from ultra_ops.engine.backups.restore import restore_backup
from ultra_ops.engine.backups.store import SAFETY_LABEL, BackupInfo, get_backup, list_backups, verify_backup
from ultra_ops.engine.envfile import read_env_file
from ultra_ops.engine.errors import InputError, OperationError, VerificationFailed
from ultra_ops.engine.release.records import (
    ReleaseRecord,
    ReleaseStatus,
    record_release,
    recording_failure,
    utc_timestamp,
)
from ultra_ops.engine.release.tags import commit_of
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment
from ultra_ops.engine.verify.report import VerifyReport
from ultra_ops.engine.verify.runner import verify_environment


@dataclass(frozen=True)
class RollbackPlan:
    """A rollback as its steps hand it on: the backup, what ran before, who asked for it and when."""

    environment: str
    backup_id: str
    version: str | None  # the backup's version; after restore_state, the version its env file names
    config_path: str = ""
    compose_file: str | None = None
    run_id: str | None = None
    launched_by: str | None = None
    started_at: str = field(default_factory=utc_timestamp)
    previous_version: str | None = None  # what ran before the rollback (check_backup notes it)
    verified: BackupInfo | None = None  # set by check_backup: every checksum matched
    safety_backup_id: str | None = None  # set by restore_state

    @property
    def compose_path(self) -> Path | None:
        return Path(self.compose_file) if self.compose_file else None



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
    """The named backup, or the newest one a rollback should go back to; InputError when there is none.

    Safety backups are skipped by default: each holds the state a restore replaced, which after an
    automatic rollback is the release that failed. They stay restorable by id.
    """
    if backup_id is not None:
        return get_backup(env, backup_id)
    backups = [b for b in list_backups(env) if not b.label.startswith(SAFETY_LABEL)]
    if not backups:
        raise InputError(f"environment {env.name} has no backups to roll back to")
    return backups[0]


def deployed_version(env: Environment) -> str | None:
    """The version the environment's env file says is deployed."""
    return read_env_file(env.env_file).get("ULTRA_VERSION") or None


# The steps, in order -----------------------------------------------------------------------------

def plan_rollback(
    env: Environment,
    backup_id: str | None = None,
    *,
    config_path: str = "",
    compose_file: str | None = None,
    run_id: str | None = None,
    launched_by: str | None = None,
    started_at: str | None = None,
) -> RollbackPlan:
    """Choose the backup (the named one, else the newest). Reads only the backup list."""
    info = choose_backup(env, backup_id)
    return RollbackPlan(environment=env.name, backup_id=info.id, version=info.version, config_path=config_path,
                        compose_file=compose_file, run_id=run_id, launched_by=launched_by,
                        started_at=started_at or utc_timestamp())


def check_backup(env: Environment, plan: RollbackPlan, *, log: Log | None = None) -> RollbackPlan:
    """Check every checksum of the backup while the environment still runs, and note what runs.
    Call it holding the environment's lock. IntegrityError: the backup is damaged, nothing changed."""
    info = verify_backup(env, plan.backup_id)
    (log or NullLog()).info(f"backup {info.id} ({info.version or 'no version'}) checks out")
    return replace(plan, verified=info, previous_version=deployed_version(env))


def stop_services(env: Environment, plan: RollbackPlan, *, log: Log, redact: Redactor) -> None:
    if plan.verified is None:
        raise OperationError(f"backup {plan.backup_id} was not checked: {env.name} not stopped")
    log.info(f"stopping {env.name} to restore backup {plan.backup_id}")
    get_runtime(env, compose_file=plan.compose_path, log=log, redact=redact).down()


def restore_state(env: Environment, plan: RollbackPlan, *, log: Log, redact: Redactor) -> RollbackPlan:
    """Restore the database and state files, after a safety backup of the current state."""
    restored = restore_backup(env, plan.backup_id, log=log, redact=redact, verified=plan.verified)
    # The env file just restored says which version ran when the backup was taken.
    version = deployed_version(env) or plan.version
    log.info(f"restored backup {plan.backup_id}; {env.name} goes back to {version or 'no version'}")
    return replace(plan, version=version, safety_backup_id=restored.get("safety_backup_id"))


def start_services(env: Environment, plan: RollbackPlan, *, log: Log, redact: Redactor) -> None:
    runtime = get_runtime(env, compose_file=plan.compose_path, log=log, redact=redact)
    runtime.up(plan.version or "latest")
    runtime.wait_healthy(env.health_timeout_s)


def verify_rollback(
    env: Environment,
    plan: RollbackPlan,
    *,
    log: Log,
    redact: Redactor,
    on_report: Callable[[VerifyReport], None] | None = None,
) -> VerifyReport:
    """Verify the restored environment; VerificationFailed with the summary when a check fails."""
    report = verify_environment(env, redact=redact, log=log)
    if on_report is not None:
        on_report(report)
    if not report.ok:
        raise VerificationFailed(f"rolled back {env.name} to backup {plan.backup_id} but verification failed: "
                                 + report.summary())
    return report


def rollback_record(env: Environment, plan: RollbackPlan, status: ReleaseStatus,
                    reason: str | None = None) -> ReleaseRecord:
    """The record of this rollback: the version it restored (or meant to) over the one that ran before."""
    previous = plan.previous_version if plan.verified is not None else deployed_version(env)
    return ReleaseRecord(environment=env.name, operation="rollback", version=plan.version,
                         previous_version=previous, status=status,
                         commit=commit_of(env, plan.version), backup_id=plan.backup_id, run_id=plan.run_id,
                         launched_by=plan.launched_by, started_at=plan.started_at, ended_at=utc_timestamp(),
                         reason=reason)


def record_rollback(env: Environment, plan: RollbackPlan) -> ReleaseRecord:
    """The last step of a manual rollback that went through."""
    return record_release(env, rollback_record(env, plan, ReleaseStatus.ROLLED_BACK))


@contextmanager
def failure_recorded(env: Environment, plan: RollbackPlan, *, redact: Redactor, log: Log | None = None,
                     status: ReleaseStatus = ReleaseStatus.ROLLBACK_FAILED) -> Iterator[None]:
    """Around a manual rollback's step: a failure is recorded with the error as reason, then raised.
    `status`: failed for the steps before anything stops, rollback_failed (default) from stop on."""
    with recording_failure(env, lambda exc: rollback_record(env, plan, status, redact(str(exc))), log=log):
        yield


# The steps in a row: a deploy's automatic rollback -----------------------------------------------

def rollback(
    env: Environment,
    backup_id: str,
    *,
    compose_file: Path | None = None,
    log: Log | None = None,
    redact: Redactor | None = None,
    verify: bool = True,
) -> RollbackResult:
    """Check, stop, restore `backup_id` (after a safety backup), start and verify. Records nothing:
    the caller (a failed deploy, holding the lock) records the outcome."""
    log = log or NullLog()
    redact = redact or Redactor.for_environment(env)
    plan = plan_rollback(env, backup_id, compose_file=str(compose_file) if compose_file else None)
    plan = check_backup(env, plan, log=log)
    stop_services(env, plan, log=log, redact=redact)
    plan = restore_state(env, plan, log=log, redact=redact)
    log.info(f"starting {env.name} at {plan.version or 'no version'}")
    start_services(env, plan, log=log, redact=redact)
    report = verify_rollback(env, plan, log=log, redact=redact) if verify else None
    return RollbackResult(plan.backup_id, plan.version, plan.safety_backup_id, report)
