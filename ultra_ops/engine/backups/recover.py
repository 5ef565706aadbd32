"""Crash recovery: what the next operation on an environment runs first, under its lock, to clear
what a dead run left behind: an interrupted database swap (finished or undone, see swap.py),
scratch databases of restores and restore tests, temp folders of backups and half-written state
files and journal temps of restores.
"""

from __future__ import annotations

from ultra_ops.engine.backups import swap
from ultra_ops.engine.backups.create import state_file_targets
from ultra_ops.engine.backups.restore import STATE_FILE_TEMP, recover_interrupted_restore
from ultra_ops.engine.backups.store import clean_stale_temps
from ultra_ops.engine.backups.trial_restore import drop_dead_restore_tests
from ultra_ops.engine.lazy import lazy_module
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


def recover_environment(env: Environment, *, log: Log | None = None, redact: Redactor | None = None) -> list[str]:
    """What the next operation on an environment runs first, under its lock: finish or undo a swap
    that a dead run left (see swap.py), drop scratch databases, and remove temp folders and files of
    dead runs. Returns one line per thing done. BackupError when an interrupted swap cannot be
    recovered now (the database server is down, say): the operation must not run on top of it."""
    log = log or NullLog()
    redact = redact or Redactor.for_environment(env)
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
