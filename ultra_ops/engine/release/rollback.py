"""Rollback: put an environment back to a backup, restart it and verify it.

One implementation, as steps: plan (choose the backup) → check (every checksum, before anything
stops) → prepare (safety backup, restore into a scratch database, while the current release still
serves) → stop, swap (scratch database in, state files), start → verify → record. Only stop, swap
and start run with the service down, so the downtime does not grow with the database; they run as
one step (stop_swap_start), so that no step boundary falls inside the downtime, and under compose
the restored release's containers are made before the stop (compose_restart.py).
`rollback_job` runs one step per op; `rollback()` runs the same steps in a row for a deploy's
automatic rollback, whose outcome the deploy records as its own.

A step that fails with the services stopped starts them again on whatever state is in place (the
old state, after a swap that was undone) and says so; when they cannot start, its error says that
the environment is stopped and what to run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from ultra_ops.engine import runs
from ultra_ops.engine.backups.restore import (
    PreparedRestore,
    complete_restore,
    discard_restore,
    finish_restore,
    prepare_restore,
)
from ultra_ops.engine.backups.store import SAFETY_LABEL, BackupInfo, get_backup, list_backups, verify_backup
from ultra_ops.engine.clock import utc_timestamp
from ultra_ops.engine.crash_points import crash_point
from ultra_ops.engine.deployed import deployed_version
from ultra_ops.engine.errors import InputError, OperationError, UltraOpsError
from ultra_ops.engine.hosts.outage import host_lost
from ultra_ops.engine.release.interrupts import described, settled_on_interrupt
from ultra_ops.engine.release.records import (
    ReleaseRecord,
    ReleaseStatus,
    operation_record,
    record_release,
    recording_failure,
)
from ultra_ops.engine.runtimes import Runtime, compose_restart, get_runtime
from ultra_ops.engine.runtimes.compose import ComposeRuntime
from ultra_ops.engine.runtimes.compose_restart import PreparedStart
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment
from ultra_ops.engine.verify.report import VerifyReport
from ultra_ops.engine.verify.runner import verify_or_fail


@dataclass(frozen=True)
class RollbackPlan:
    """A rollback as its steps hand it on: the backup, what ran before, who asked for it and when."""

    environment: str
    backup_id: str
    version: str | None  # the backup's version; after swap_state, the version its env file names
    compose_file: str | None = None
    run_id: str | None = None
    launched_by: str | None = None
    started_at: str = field(default_factory=utc_timestamp)
    previous_version: str | None = None  # what ran before the rollback (check_backup notes it)
    verified: BackupInfo | None = None  # set by check_backup: every checksum matched
    safety_backup_id: str | None = None  # set by prepare_state
    prepared: PreparedRestore | None = None  # set by prepare_state: the scratch database to swap in

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
        return {
            "backup_id": self.backup_id,
            "version": self.version,
            "safety_backup_id": self.safety_backup_id,
            "verification": self.report.to_dict() if self.report else None,
        }


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


# The steps, in order -----------------------------------------------------------------------------


def plan_rollback(
    env: Environment,
    backup_id: str | None = None,
    *,
    compose_file: str | None = None,
    run_id: str | None = None,
    launched_by: str | None = None,
    started_at: str | None = None,
) -> RollbackPlan:
    """Choose the backup (the named one, else the newest). Reads only the backup list."""
    info = choose_backup(env, backup_id)
    return RollbackPlan(
        environment=env.name,
        backup_id=info.id,
        version=info.version,
        compose_file=compose_file,
        run_id=run_id,
        launched_by=launched_by,
        started_at=started_at or utc_timestamp(),
    )


def check_backup(env: Environment, plan: RollbackPlan, *, log: Log | None = None) -> RollbackPlan:
    """Check every checksum of the backup while the environment still runs, and note what runs.
    Call it holding the environment's lock. IntegrityError: the backup is damaged, nothing changed."""
    info = verify_backup(env, plan.backup_id)
    (log or NullLog()).info(f"backup {info.id} ({info.version or 'no version'}) checks out")
    return replace(plan, verified=info, previous_version=deployed_version(env))


def prepare_state(env: Environment, plan: RollbackPlan, *, log: Log, redact: Redactor) -> RollbackPlan:
    """Safety backup and restore into a scratch database, while the current release still serves.
    A failure here changes nothing: the environment keeps running, and the error says so."""
    if plan.verified is None:
        raise OperationError(f"backup {plan.backup_id} was not checked: nothing restored")
    try:
        prepared = prepare_restore(env, plan.backup_id, log=log, redact=redact, verified=plan.verified)
    except UltraOpsError as exc:
        raise _with(
            exc, f"{exc}; nothing was stopped: {env.name} still runs {deployed_version(env) or 'its current release'}"
        ) from None
    log.info(f"backup {plan.backup_id} restored into {prepared.scratch}; {env.name} still serves")
    return replace(plan, prepared=prepared, safety_backup_id=prepared.safety_backup_id)


def stop_swap_start(env: Environment, plan: RollbackPlan, *, log: Log, redact: Redactor) -> RollbackPlan:
    """Stop, swap and start: the part with the service down, in one step. Under compose the
    restored release's containers are created first, while the current release serves, and the
    start is theirs (compose_restart.py); where that cannot be done, the start is `up` as before."""
    prepared = prepare_start(env, plan, log=log, redact=redact)
    stop_services(env, plan, log=log, redact=redact, prepared=prepared)
    plan = swap_state(env, plan, log=log, redact=redact, prepared=prepared)
    crash_point("swapped")  # tests: killed with the swap done and the services stopped
    log.info(f"starting {env.name} at {plan.version or 'no version'}")
    start_services(env, plan, log=log, redact=redact, prepared=prepared)
    return plan


def prepare_start(env: Environment, plan: RollbackPlan, *, log: Log, redact: Redactor) -> PreparedStart | None:
    """Under compose, the backup's release's containers created beside the running ones; None
    elsewhere, or when compose could not make them (the start then goes through `up`)."""
    runtime = get_runtime(env, compose_file=plan.compose_path, log=log, redact=redact)
    if not isinstance(runtime, ComposeRuntime):
        return None
    try:
        return compose_restart.prepare_start(runtime, plan.version or "latest")
    except (UltraOpsError, OSError) as exc:
        log.warning(redact(f"could not create {env.name}'s containers ahead ({exc}); they start through compose up"))
        return None


def stop_services(
    env: Environment, plan: RollbackPlan, *, log: Log, redact: Redactor, prepared: PreparedStart | None = None
) -> None:
    if plan.verified is None:
        raise OperationError(f"backup {plan.backup_id} was not checked: {env.name} not stopped")
    log.info(f"stopping {env.name} to swap in backup {plan.backup_id}")
    try:
        runtime = get_runtime(env, compose_file=plan.compose_path, log=log, redact=redact)
        if prepared is not None and isinstance(runtime, ComposeRuntime):
            compose_restart.stop_old(runtime, prepared)
        else:
            runtime.down()
    except BaseException as exc:
        if host_lost(env, exc) is None:
            _discard(env, plan, log, redact)  # on a lost host the next operation drops it
        raise _with(exc, f"{exc}{_restart(env, plan, log, redact, exc, prepared)}") from None


def swap_state(
    env: Environment, plan: RollbackPlan, *, log: Log, redact: Redactor, prepared: PreparedStart | None = None
) -> RollbackPlan:
    """Swap the prepared database in and restore the state files (services stopped). On a failure
    the swap is undone (or finished, past its last rename) and the services start again on
    whatever is in place; the error says which."""
    if plan.prepared is None:
        raise OperationError(f"backup {plan.backup_id} was not prepared: nothing swapped")
    try:
        complete_restore(env, plan.prepared, log=log, redact=redact, drop_old=False)
    except BaseException as exc:
        raise _with(exc, f"{exc}{_restart(env, plan, log, redact, exc, prepared)}") from None
    # The env file just restored says which version ran when the backup was taken.
    version = deployed_version(env) or plan.version
    log.info(f"restored backup {plan.backup_id}; {env.name} goes back to {version or 'no version'}")
    return replace(plan, version=version)


def start_services(
    env: Environment, plan: RollbackPlan, *, log: Log, redact: Redactor, prepared: PreparedStart | None = None
) -> None:
    """Start the restored release (its prepared containers, where they are still what compose would
    make); once it is healthy, drop the database the swap replaced."""
    runtime = get_runtime(env, compose_file=plan.compose_path, log=log, redact=redact)
    try:
        started_prepared = _start(runtime, plan.version or "latest", prepared, log)
        runtime.wait_healthy(env.health_timeout_s)
    except UltraOpsError as exc:
        back = (
            (
                f"; `ultra-ops rollback --environment {env.name} --backup {plan.safety_backup_id}` puts back "
                f"the state before this rollback"
            )
            if plan.safety_backup_id
            else ""
        )
        raise _with(
            exc,
            f"{exc}; {env.name} is STOPPED: backup {plan.backup_id} is in place but its services "
            f"did not start; fix the cause and run `ultra-ops deploy --environment {env.name} "
            f"--tag {plan.version or 'VERSION'}`{back}{_left_to_recover(env, plan)}",
        ) from None
    if started_prepared and isinstance(runtime, ComposeRuntime) and prepared is not None:
        compose_restart.remove_old(runtime, prepared)
    if plan.prepared is not None:
        finish_restore(env, plan.prepared, log=log, redact=redact)


def _start(runtime: Runtime, version: str, prepared: PreparedStart | None, log: Log) -> bool:
    """Start at `version`: the prepared containers where they still fit, else `up`. True when the
    prepared ones were started (the old ones are then to remove, once the new answer)."""
    if isinstance(runtime, ComposeRuntime) and prepared is not None:
        if compose_restart.matches(runtime, prepared, version):
            try:
                compose_restart.start_new(runtime, prepared)
                return True
            except UltraOpsError as exc:
                log.warning(f"{exc}; starting through compose up")
        else:
            log.info("the swap restored other compose inputs than the containers were made from: compose up")
        compose_restart.discard(runtime, prepared)
    runtime.up(version)
    return False


def _with(exc: BaseException, message: str) -> BaseException:
    """The same kind of error with another message; interrupts are kept as they are."""
    if not isinstance(exc, Exception):
        return exc
    try:
        return type(exc)(message)
    except TypeError:
        return OperationError(message)


def _discard(env: Environment, plan: RollbackPlan, log: Log, redact: Redactor) -> None:
    if plan.prepared is None:
        return
    try:
        discard_restore(env, plan.prepared, log=log, redact=redact)
    except Exception as exc:  # noqa: BLE001 - the next operation drops it
        log.warning(redact(f"could not drop {plan.prepared.scratch}: {exc}; the next operation drops it"))


def _left_to_recover(env: Environment, plan: RollbackPlan) -> str:
    """The services that ran before this rollback are to run again: its marker keeps them for
    `recover` (runs.py), so that once the cause (dockerd down, say) is fixed, recover starts them on
    the state in place. The text to add to the error."""
    marker = runs.update(env, plan.run_id, restart=True, unsettled=True)
    if not marker or not marker.get("services"):
        return ""
    return f" (or `ultra-ops recover --environment {env.name}`, which starts {', '.join(marker['services'])} again)"


def _restart(
    env: Environment,
    plan: RollbackPlan,
    log: Log,
    redact: Redactor,
    cause: BaseException,
    prepared: PreparedStart | None = None,
) -> str:
    """Start the services again after a failure with them stopped, on the state that is in place
    (the env file names its version), dropping any containers made for the backup's release; the
    text to add to the error. Not tried when `cause` is the host lost (outage.py): that could only
    wait out a timeout."""
    version = deployed_version(env)
    if host_lost(env, cause) is not None:
        return (
            f"; {env.name} is STOPPED as far as known (its services were stopped for the swap and the host is "
            f"out of reach, so they were not started again): once it answers, run "
            f"`ultra-ops recover --environment {env.name}`, which settles the swap and starts them at the version "
            "then in place"
        ) + ("" if runs.update(env, plan.run_id, restart=True, unsettled=True) else "")
    try:
        runtime = get_runtime(env, compose_file=plan.compose_path, log=log, redact=redact)
        if prepared is not None and isinstance(runtime, ComposeRuntime):
            compose_restart.discard(runtime, prepared)
        runtime.up(version or "latest")
        runtime.wait_healthy(env.health_timeout_s)
    except (UltraOpsError, OSError) as exc:
        return (
            f"; {env.name} is STOPPED: its services did not start again ({redact(str(exc))}); fix the cause "
            f"and run `ultra-ops deploy --environment {env.name} --tag {version or 'VERSION'}`"
            + _left_to_recover(env, plan)
        )
    log.info(f"{env.name} restarted at {version or 'no version'}")
    return f"; {env.name} restarted at {version or 'no version'}"


def verify_rollback(
    env: Environment,
    plan: RollbackPlan,
    *,
    log: Log,
    redact: Redactor,
    on_report: Callable[[VerifyReport], None] | None = None,
) -> VerifyReport:
    """Verify the restored environment; VerificationFailed with the summary when a check fails."""
    return verify_or_fail(
        env,
        f"rolled back {env.name} to backup {plan.backup_id} but verification failed",
        log=log,
        redact=redact,
        on_report=on_report,
    )


def rollback_record(
    env: Environment, plan: RollbackPlan, status: ReleaseStatus, reason: str | None = None
) -> ReleaseRecord:
    """The record of this rollback: the version it restored (or meant to) over the one that ran
    before, which check_backup notes."""
    return operation_record(
        env, "rollback", plan, status, version=plan.version, previous_noted=plan.verified is not None, reason=reason
    )


def record_rollback(env: Environment, plan: RollbackPlan) -> ReleaseRecord:
    """The last step of a manual rollback that went through."""
    return record_release(env, rollback_record(env, plan, ReleaseStatus.ROLLED_BACK))


@contextmanager
def failure_recorded(
    env: Environment,
    plan: RollbackPlan,
    *,
    redact: Redactor,
    log: Log | None = None,
    status: ReleaseStatus = ReleaseStatus.ROLLBACK_FAILED,
) -> Iterator[None]:
    """Around a manual rollback's step: a failure is recorded with the error as reason, then raised.
    `status`: failed for the steps before anything stops, rollback_failed (default) from stop on.
    An interrupt is settled first (interrupts.py) and recorded `interrupted`."""
    log = log or NullLog()
    with (
        recording_failure(
            env,
            lambda outcome, reason: rollback_record(env, plan, outcome, reason),
            redact=redact,
            status=status,
            log=log,
        ),
        settled_on_interrupt(
            env,
            described(env, "rollback", None, plan.backup_id),
            run_id=plan.run_id,
            compose_file=plan.compose_path,
            log=log,
            redact=redact,
        ),
    ):
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
    """Check, prepare (safety backup, scratch restore), stop, swap, start and verify. Records
    nothing: the caller (a failed deploy, holding the lock) records the outcome."""
    log = log or NullLog()
    redact = redact or Redactor.for_environment(env)
    plan = plan_rollback(env, backup_id, compose_file=str(compose_file) if compose_file else None)
    plan = check_backup(env, plan, log=log)
    plan = prepare_state(env, plan, log=log, redact=redact)
    plan = stop_swap_start(env, plan, log=log, redact=redact)
    report = verify_rollback(env, plan, log=log, redact=redact) if verify else None
    return RollbackResult(plan.backup_id, plan.version, plan.safety_backup_id, report)
