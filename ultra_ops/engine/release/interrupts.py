"""An interrupt (Ctrl-C, SIGTERM) during a deploy or rollback step: before the process exits, the
database swap is finished or undone, no service is left half up, and one error says in what state
the environment is and what to run.

Interrupts arrive as BaseExceptions that are not Exceptions: KeyboardInterrupt, or the
orchestrator's own type (which the engine does not name). Here one becomes an OperationInterrupted,
an ordinary error marked `interrupted` for the release record: the record is written at once, and
the run fails with that message instead of the interrupt's bare type name. A second interrupt while
this runs is ignored: it must not leave the swap half done.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ultra_ops.engine import runs
from ultra_ops.engine.backups.recover import recover_state
from ultra_ops.engine.deployed import deployed_version
from ultra_ops.engine.errors import OperationError
from ultra_ops.engine.release.records import ReleaseStatus, find_releases, record_unfinished, with_outcome
from ultra_ops.engine.runtimes import application, get_runtime
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment


class OperationInterrupted(OperationError):
    """A deploy or rollback stopped by Ctrl-C or SIGTERM; the message says what state it left."""


def is_interrupt(exc: BaseException) -> bool:
    return not isinstance(exc, Exception | GeneratorExit)


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM inside the block (from the main thread; elsewhere signals cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def settled_on_interrupt(
    env: Environment,
    what: str,
    *,
    run_id: str | None,
    compose_file: Path | None,
    log: Log,
    redact: Redactor,
) -> Iterator[None]:
    """Around a deploy or rollback step: an interrupt inside is settled (settle_interrupt) and
    raised again as OperationInterrupted with the state it left. `what` names the operation."""
    try:
        yield
    except BaseException as exc:
        if not is_interrupt(exc):
            raise
        with uninterrupted():
            message = settle_interrupt(env, what, run_id=run_id, compose_file=compose_file, log=log, redact=redact)
        log.warning(message)
        raise with_outcome(OperationInterrupted(message), ReleaseStatus.INTERRUPTED) from None


def settle_interrupt(
    env: Environment, what: str, *, run_id: str | None, compose_file: Path | None, log: Log, redact: Redactor
) -> str:
    """Finish or undo the swap, stop services left half up, and say where that leaves the
    environment. A stopped environment keeps its run's marker (runs.py), so that `ultra-ops
    recover` starts what ran before the interrupted run."""
    parts = [f"{what} was interrupted (Ctrl-C or SIGTERM)"]
    recover_cmd = f"`ultra-ops recover --environment {env.name}`"
    try:
        parts += [line for line in recover_state(env, log=log, redact=redact) if "the swap of backup" in line]
    except Exception as exc:  # noqa: BLE001 - the journal stays: recover finishes it
        parts.append(f"the database swap is still pending ({redact(str(exc))}): run {recover_cmd}")
    version = deployed_version(env) or "no version"
    try:
        runtime = get_runtime(env, compose_file=compose_file, log=log, redact=redact)
        statuses = application(runtime.status(usage=False))
        running = [s.name for s in statuses if s.running]
        stopped = [s.name for s in statuses if not s.running]
        if running and stopped:
            runtime.down()  # half up serves nobody: stopped whole, and recover starts it whole
            parts.append(f"stopped {', '.join(running)}, left running beside stopped {', '.join(stopped)}")
            stopped, running = stopped + running, []
    except Exception as exc:  # noqa: BLE001 - said instead of a state we could not see
        parts.append(f"the state of {env.name}'s services is unknown ({redact(str(exc))}); run {recover_cmd}")
        runs.update(env, run_id, interrupted=True, unsettled=True)
        return "; ".join(parts)
    if not stopped:
        verify_cmd = f"`ultra-ops verify --environment {env.name}`"
        parts.append(f"{env.name} runs {version} ({', '.join(running)}): check it with {verify_cmd}")
        return "; ".join(parts)
    marker = runs.update(env, run_id, interrupted=True, unsettled=True)
    if marker and marker.get("services"):
        parts.append(f"{env.name} is STOPPED at {version}: {recover_cmd} starts {', '.join(marker['services'])} again")
    else:
        parts.append(
            f"{env.name} is STOPPED at {version}: start it with "
            f"`ultra-ops deploy --environment {env.name} --tag {version}`"
        )
    return "; ".join(parts)


def finish_run(env: Environment, run_id: str | None, *, log: Log | None = None, redact: Redactor | None = None) -> None:
    """The run lets go of the environment's lock. A deploy or rollback that did not record how it
    ended was interrupted where no step could settle it (between two steps, say): it is settled
    and recorded `interrupted` now. Then its marker goes, or stays where the environment still
    needs settling (runs.end)."""
    log = log or NullLog()
    marker = runs.read_marker(env)
    if marker is not None and marker.get("run_id") == run_id and isinstance(marker.get("record"), dict):
        try:
            if not find_releases(env, run_id=run_id, limit=1):
                redact = redact or Redactor.for_environment(env)
                draft = marker["record"]
                what = described(env, draft.get("operation"), draft.get("version"), draft.get("backup_id"))
                with uninterrupted():
                    message = settle_interrupt(env, what, run_id=run_id, compose_file=None, log=log, redact=redact)
                log.warning(message)
                record_unfinished(env, runs.read_marker(env) or marker, message)
        except Exception as exc:  # noqa: BLE001 - the marker stays: the next operation records it
            log.warning(f"could not record the end of run {run_id}: {exc}")
            return
    runs.end(env, run_id)


def described(env: Environment, operation: str | None, version: str | None, backup_id: str | None) -> str:
    """A deploy or rollback in the words every interrupt message uses, from its steps or its draft."""
    if operation == "rollback":
        return f"rollback of {env.name} to backup {backup_id or '-'}"
    return f"deploy of {version or '-'} to {env.name}"


def interrupted_state(env: Environment, run_id: str) -> str:
    """The one message for a run that Ctrl-C or SIGTERM stopped where no step could say what it
    left (between two steps): what its end settled, as its `interrupted` record says (finish_run);
    else, for a run that leaves no record or could not write it, where to look and what to run."""
    try:
        record = next(iter(find_releases(env, run_id=run_id, limit=1)), None)
    except Exception:  # noqa: BLE001 - an unreadable record: the commands below still tell
        record = None
    if record is not None and record.status == ReleaseStatus.INTERRUPTED and record.reason:
        return record.reason
    return (
        f"run {run_id} on {env.name} was interrupted (Ctrl-C or SIGTERM); "
        f"`ultra-ops status --environment {env.name}` shows the state it left, and "
        f"`ultra-ops recover --environment {env.name}` settles what it left unfinished"
    )
