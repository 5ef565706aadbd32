"""What the next operation on an environment runs first, under its lock: the backups' crash
recovery (backups/recover.py: swap, scratch databases, temps), then the release record a dead
deploy or rollback never wrote, as `interrupted`. Here, above both, because it needs both.
"""

from __future__ import annotations

from ultra_ops.engine import runs
from ultra_ops.engine.backups.recover import recover_state
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
