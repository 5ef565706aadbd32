"""What the next operation on an environment runs first, under its lock: the backups' crash
recovery (backups/recover.py: swap, scratch databases, temps), then the release record a dead
deploy or rollback never wrote, as `interrupted`. Here, above both, because it needs both.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from ultra_ops.engine import runs
from ultra_ops.engine.backups.recover import recover_state
from ultra_ops.engine.errors import OperationError, UltraOpsError
from ultra_ops.engine.release.records import ReleaseStatus, record_release, record_unfinished, recording_failure
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment


def recover_environment(
    env: Environment,
    *,
    log: Log | None = None,
    redact: Redactor | None = None,
    run_id: str | None = None,
    launched_by: str | None = None,
) -> list[str]:
    """What the next operation on an environment runs first, under its lock: finish or undo a swap
    that a dead run left (see swap.py), drop scratch databases, remove temp folders and files of
    dead runs, and record a deploy or rollback that died without a record as `interrupted` (its
    marker, runs.py, names it; `run_id` is the run recovering, whose own marker it is not). A
    rollback a deploy owes is done here and leaves its own record, of this run (`launched_by`).
    Returns one line per thing done. BackupError when an interrupted swap cannot be recovered now (the
    database server is down, say): the operation must not run on top of it."""
    log = log or NullLog()
    redact = redact or Redactor.for_environment(env)
    done = recover_state(env, log=log, redact=redact)
    marker = runs.unfinished(env, run_id)
    if marker is not None and marker.get("rollback_owed"):
        done.append(_owed_rollback(env, marker, log=log, redact=redact, run_id=run_id, launched_by=launched_by))
    if marker is not None:
        owner = f"its process, pid {marker.get('pid')} on {marker.get('host')}, died (killed?)"
        if not marker.get("pid"):
            owner = "it ended without recording its outcome"
        swaps = [line for line in done if "the swap of backup" in line]
        reason = (
            f"{marker.get('operation') or 'the run'} ended without finishing: {owner}; "
            f"found by the next operation on {env.name}" + (": " + "; ".join(swaps) if swaps else "")
        )
        record = record_unfinished(env, marker, redact(reason))
        if record is not None:
            done.append(f"recorded {record.operation} run {record.run_id or '-'} as interrupted: {reason}")
            log.info(done[-1])
    return done


def _owed_rollback(
    env: Environment, marker: dict, *, log: Log, redact: Redactor, run_id: str | None, launched_by: str | None
) -> str:
    """A deploy that lost its host after its backup left the rollback to that backup owed
    (deploy.left_on_lost_host): done now, as the deploy would have done it, and recorded as a
    rollback is (rolled_back, or failed / rollback_failed with the error), of the run recovering,
    its reason naming the deploy run that owed it. Its marker stays until it is done: a failure here
    leaves it owed, and the error says so."""
    from ultra_ops.engine.release import rollback as rb  # rollback imports much of the engine

    backup_id = str(marker["rollback_owed"])
    draft = marker.get("record") if isinstance(marker.get("record"), dict) else {}
    deploy_run = marker.get("run_id") or "-"
    what = f"the deploy of {draft.get('version') or '-'} (run {deploy_run}) that lost {env.name}'s host"
    owed = f"the owed rollback of deploy {deploy_run} ({draft.get('version') or '-'}), whose host was lost"
    log.info(f"rolling back {what} to backup {backup_id}")
    # The plan as the record needs it from the start: a backup that is gone fails the plan itself.
    plan = rb.RollbackPlan(
        environment=env.name, backup_id=backup_id, version=None, run_id=run_id, launched_by=launched_by
    )

    def recorded(status: ReleaseStatus) -> AbstractContextManager[None]:
        # `plan` as the steps leave it (a closure over the name): the record has what they noted.
        return recording_failure(
            env,
            lambda outcome, reason: rb.rollback_record(env, plan, outcome, f"{owed}: {reason}; it is still owed"),
            redact=redact,
            status=status,
            log=log,
        )

    try:
        # As a manual rollback records its steps: `failed` before anything stops, then `rollback_failed`.
        with recorded(ReleaseStatus.FAILED):
            plan = rb.plan_rollback(env, backup_id, run_id=run_id, launched_by=launched_by, started_at=plan.started_at)
            plan = rb.check_backup(env, plan, log=log)
            plan = rb.prepare_state(env, plan, log=log, redact=redact)
        with recorded(ReleaseStatus.ROLLBACK_FAILED):
            plan = rb.stop_swap_start(env, plan, log=log, redact=redact)
            rb.verify_rollback(env, plan, log=log, redact=redact)
    except UltraOpsError as exc:
        raise OperationError(
            redact(
                f"the rollback to backup {backup_id} owed by {what} failed: {exc}; it is still owed: "
                f"run `ultra-ops recover --environment {env.name}` again once the cause is fixed"
            )
        ) from None
    record_release(
        env, rb.rollback_record(env, plan, ReleaseStatus.ROLLED_BACK, f"{owed}: rolled back once the host answered")
    )
    runs.write_marker(env, {**marker, "rollback_owed": None})
    line = f"rolled back {what} to backup {backup_id} ({plan.version or 'no version'}), which verified ok"
    log.info(line)
    return line
