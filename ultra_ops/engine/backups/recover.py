"""Crash recovery of what a dead run left in the environment's databases, files and services: an
interrupted database swap (finished or undone, see swap.py), scratch databases of restores and
restore tests, temp folders of backups and half-written state files and journal temps of restores
(recover_state). `ultra-ops recover` also puts the services back as the last completed operation
left them (settle_services): a run killed while it stopped or started them leaves them half up.
The whole of what the next operation runs first, records included, is release/recover.py.
"""

from __future__ import annotations

from ultra_ops.engine import runs
from ultra_ops.engine.backups import swap
from ultra_ops.engine.backups.create import state_file_targets
from ultra_ops.engine.backups.restore import STATE_FILE_TEMP, recover_interrupted_restore
from ultra_ops.engine.backups.store import clean_stale_temps
from ultra_ops.engine.backups.trial_restore import drop_dead_restore_tests
from ultra_ops.engine.clock import local_time
from ultra_ops.engine.deployed import deployed_version
from ultra_ops.engine.errors import BackupError, OperationError, UltraOpsError
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.runtimes import application, get_runtime
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment

psycopg = lazy_module("psycopg")


def _clean_file_temps(env: Environment, log: Log) -> list[str]:
    """Remove the half-written state files (`.<name>.uo-restore-*`) of restores that died."""
    done = []
    for folder in {p.parent for p in state_file_targets(env).values()}:
        for tmp in folder.glob(f".*{STATE_FILE_TEMP}*") if folder.is_dir() else ():
            tmp.unlink(missing_ok=True)
            done.append(f"removed {tmp}, left by an interrupted restore")
            log.info(done[-1])
    return done


def recover_state(env: Environment, *, log: Log, redact: Redactor) -> list[str]:
    """The databases, files and folders half of recovery: swap, scratch databases, temps."""
    done: list[str] = []
    journal = swap.read_journal(env)
    if journal is not None:
        done.append(recover_interrupted_restore(env, journal, log, redact))
    try:
        done += swap.drop_leftovers(env, log=log, redact=redact)
    except psycopg.Error as exc:
        log.warning(redact(f"could not look for scratch databases of interrupted restores: {exc}"))
    done += [f"removed backup temp folder {n}, left by an interrupted backup" for n in clean_stale_temps(env, log)]
    done += _clean_file_temps(env, log)
    done += drop_dead_restore_tests(env, log=log, redact=redact)
    for line in swap.remove_stale_journal_temps(env):
        log.info(line)
        done.append(line)
    return done


def check_reachable(env: Environment, redact: Redactor) -> None:
    """BackupError unless the database server answers: `recover` must not say there is nothing to
    recover when it could not look."""
    try:
        with swap.admin(env, app=f"{swap.APP}-recover") as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise BackupError(
            redact(
                f"could not check {env.name} for what interrupted runs left: the database server at "
                f"{env.database.host}:{env.database.port} does not answer ({' '.join(str(exc).split())})"
            )
        ) from None


def settle_services(
    env: Environment, run_id: str | None, *, log: Log | None = None, redact: Redactor | None = None
) -> tuple[list[str], str]:
    """Put the services back as the last completed operation left them: those that ran before a
    run that did not finish (its marker, carried into this run's, says which) run again, at the
    version now in place; with no such record, a half-up environment is started whole. Returns
    the lines of what was done and one line on the services' state. OperationError when they do
    not start (the environment is then stopped, and the error says what to run)."""
    log = log or NullLog()
    redact = redact or Redactor.for_environment(env)
    marker = runs.read_marker(env)
    own = marker is not None and marker.get("run_id") == run_id and marker.get("unsettled")
    expected = marker.get("services") if own else None
    runtime = get_runtime(env, log=log, redact=redact)
    # The stores a compose project keeps up while its application is stopped do not make it half up.
    statuses = application(runtime.status(usage=False))
    running = [s.name for s in statuses if s.running]
    stopped = [s.name for s in statuses if not s.running]
    version = deployed_version(env)
    deploy_cmd = f"`ultra-ops deploy --environment {env.name} --tag {version or 'VERSION'}`"
    if expected == [] and running:
        runtime.down()
        line = f"stopped {', '.join(running)}: no service ran before the run that did not finish"
        log.info(line)
        return [line], f"all services stopped, as before the run that did not finish; start them with {deploy_cmd}"
    if expected and stopped:
        why = f"{', '.join(expected)} ran before the run that did not finish"
    elif expected is None and running and stopped:
        why = f"it was half up ({', '.join(running)} running, {', '.join(stopped)} stopped)"
    elif running and not stopped:
        return _tidied(runtime, log), f"all services running ({', '.join(running)}) at {version or 'no version'}"
    else:
        return [], f"all services stopped ({', '.join(stopped)}); start them with {deploy_cmd}"
    log.info(f"starting {env.name}'s services at {version or 'no version'}: {why}")
    try:
        runtime.up(version or "latest")
        runtime.wait_healthy(env.health_timeout_s)
    except (UltraOpsError, OSError) as exc:
        raise OperationError(
            redact(
                f"{env.name}'s services did not start again ({exc}); {env.name} is STOPPED: fix the cause "
                f"and run {deploy_cmd}"
            )
        ) from None
    line = f"started {env.name}'s services ({', '.join(stopped + running)}) at {version or 'no version'}: {why}"
    log.info(line)
    return [line], f"all services running at {version or 'no version'}"


def _tidied(runtime: object, log: Log) -> list[str]:
    """Where the runtime has them (compose), remove the containers a restart killed midway left
    beside the running ones (a successor made but never started, a replaced one not yet removed)."""
    remove = getattr(runtime, "remove_strays", None)
    if remove is None:
        return []
    try:
        removed = remove()
    except UltraOpsError as exc:
        log.warning(f"could not look for containers an interrupted restart left: {exc}")
        return []
    return [f"removed {len(removed)} container(s) an interrupted restart left"] if removed else []


def pending_recovery(env: Environment, *, running: bool) -> list[str]:
    """What the next operation's recovery will find, for `status`: a database swap not finished or
    undone, a deploy or rollback that ended without finishing. Reads only. `running`: a run holds
    the lock now, so its swap and marker are its own, in progress."""
    lines = []
    journal = swap.read_journal(env)
    if journal is not None:
        recover_cmd = f"`ultra-ops recover --environment {env.name}`"
        owner = "in progress" if running else f"left by an interrupted run: {recover_cmd}"
        since = local_time(journal.started_at, env.timezone)
        lines.append(f"database swap of backup {journal.backup_id} at phase {journal.phase} since {since} ({owner})")
    marker = runs.read_marker(env)
    if marker is not None and not running:
        services = ", ".join(marker.get("services") or []) or "none"
        recover_cmd = f"`ultra-ops recover --environment {env.name}`"
        if marker.get("unsettled") and not marker.get("interrupted"):
            # Carried through a run that finished (a backup, say) from one that did not.
            lines.append(f"services to put back after a run that did not finish: {services}; {recover_cmd}")
        else:
            lines.append(
                f"{marker.get('operation') or 'a run'} (run {marker.get('run_id') or '-'}) ended without "
                f"finishing; services running before it: {services}; {recover_cmd} settles it"
            )
    return lines
