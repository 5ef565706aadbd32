"""What the next operation on an environment runs first, under its lock: the backups' crash
recovery (backups/recover.py: swap, scratch databases, temps), then the release record a dead
deploy or rollback never wrote, as `interrupted`. Here, above both, because it needs both.
"""

from __future__ import annotations

from ultra_ops.engine import runs
from ultra_ops.engine.backups.recover import recover_state
from ultra_ops.engine.errors import OperationError, UltraOpsError
from ultra_ops.engine.release.records import record_unfinished
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment


def recover_environment(
    env: Environment, *, log: Log | None = None, redact: Redactor | None = None, run_id: str | None = None
) -> list[str]:
    """What the next operation on an environment runs first, under its lock: finish or undo a swap
    that a dead run left (see swap.py), drop scratch databases, remove temp folders and files of
    dead runs, and record a deploy or rollback that died without a record as `interrupted` (its
    marker, runs.py, names it; `run_id` is the run recovering, whose own marker it is not). Returns
    one line per thing done. BackupError when an interrupted swap cannot be recovered now (the
    database server is down, say): the operation must not run on top of it."""
    log = log or NullLog()
    redact = redact or Redactor.for_environment(env)
    done = recover_state(env, log=log, redact=redact)
    marker = runs.unfinished(env, run_id)
    if marker is not None and marker.get("rollback_owed"):
        done.append(_owed_rollback(env, marker, log=log, redact=redact))
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


def _owed_rollback(env: Environment, marker: dict, *, log: Log, redact: Redactor) -> str:
    """A deploy that lost its host after its backup left the rollback to that backup owed
    (deploy.left_on_lost_host): done now, as the deploy would have done it. Its marker stays until
    it is done: a failure here leaves it owed, and the error says so."""
    from ultra_ops.engine.release.rollback import rollback  # rollback imports much of the engine

    backup_id = str(marker["rollback_owed"])
    draft = marker.get("record") if isinstance(marker.get("record"), dict) else {}
    what = (
        f"the deploy of {draft.get('version') or '-'} (run {marker.get('run_id') or '-'}) that lost {env.name}'s host"
    )
    log.info(f"rolling back {what} to backup {backup_id}")
    try:
        result = rollback(env, backup_id, log=log, redact=redact)
    except UltraOpsError as exc:
        raise OperationError(
            redact(
                f"the rollback to backup {backup_id} owed by {what} failed: {exc}; it is still owed: "
                f"run `ultra-ops recover --environment {env.name}` again once the cause is fixed"
            )
        ) from None
    runs.write_marker(env, {**marker, "rollback_owed": None})
    line = f"rolled back {what} to backup {backup_id} ({result.version or 'no version'}), which verified ok"
    log.info(line)
    return line
