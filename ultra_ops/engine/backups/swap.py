"""The database swap: a restored scratch database put in place of an environment's database, so
that a crash at any point can be finished or undone by the next operation.

A swap goes through phases, and each is written to a journal (`<state_dir>/swap.json`, fsynced)
before it starts:

    restoring   scratch database being created and filled by pg_restore
    prepared    scratch complete; the service may still run on the current database
    disable     current database: ALLOW_CONNECTIONS false, sessions terminated
    rename_old  current database renamed to <db>__old_<id>
    rename_new  scratch renamed to <db>                      (the commit point)
    files       state files (env file, compose file, config) written from the backup
    drop_old    the replaced database dropped (a rollback does it once the restored release is
                healthy, so that removing a large database's files is not part of its downtime)

`recover_swap` reads the journal: while the scratch database still exists the final rename never
committed, so it goes back (old database renamed back, connections allowed again, scratch dropped);
once the scratch is gone under <db>, it goes forward (state files written from the backup, old
database dropped). Either way the environment ends with one database that accepts connections and
state files that match it. Every swap statement runs with a lock timeout and a statement timeout,
so another session holding a lock on the database cannot stall the swap (nor leave a RENAME
waiting in the server after the client died), and the swap's sessions carry an application name
that recovery terminates first.
"""

from __future__ import annotations

import json
import os
import re
import secrets as _random
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ultra_ops.engine.crash_points import CRASH_ENV as CRASH_ENV  # tests: a phase, or "rename_new:committed"
from ultra_ops.engine.crash_points import crash_point
from ultra_ops.engine.errors import BackupError
from ultra_ops.engine.files import fsync_dir
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.secrets import Log, Redactor
from ultra_ops.engine.settings import Environment

psycopg = lazy_module("psycopg")

JOURNAL = "swap.json"
PHASES = ("restoring", "prepared", "disable", "rename_old", "rename_new", "files", "drop_old")
_FORWARD = ("rename_new", "files", "drop_old")  # phases in which the final rename may have committed
APP = "ultra_ops-swap"
LOCK_TIMEOUT_S = 5.0
STATEMENT_TIMEOUT_S = 60.0
_MAX_PG_IDENTIFIER = 63
_SWAP_ATTEMPTS = 10


@dataclass(frozen=True)
class SwapJournal:
    environment: str
    database: str
    scratch: str
    old: str
    backup_id: str
    had_current: bool  # the environment's database existed when the restore began
    phase: str
    pid: int
    host: str
    started_at: str

    @property
    def app(self) -> str:
        """The application name of this swap's sessions: recovery terminates what is left of them."""
        return f"{APP}-{self.scratch.rsplit('_', 1)[-1]}"


def scratch_name(base: str, kind: str, suffix: str) -> str:
    # PostgreSQL silently truncates identifiers past 63 bytes; truncating the base ourselves keeps
    # the suffix, so two restores can never collide on a truncated name.
    tail = f"__{kind}_{suffix}"
    head = base.encode()[: _MAX_PG_IDENTIFIER - len(tail)].decode(errors="ignore")
    return head + tail


def new_journal(env: Environment, backup_id: str, had_current: bool) -> SwapJournal:
    suffix = _random.token_hex(4)
    return SwapJournal(
        environment=env.name,
        database=env.database.name,
        scratch=scratch_name(env.database.name, "restore", suffix),
        old=scratch_name(env.database.name, "old", suffix),
        backup_id=backup_id,
        had_current=had_current,
        phase="restoring",
        pid=os.getpid(),
        host=socket.gethostname(),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


# The journal file --------------------------------------------------------------------------------


def journal_path(env: Environment) -> Path:
    return env.state_dir / JOURNAL


def read_journal(env: Environment) -> SwapJournal | None:
    path = journal_path(env)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return SwapJournal(**{k: data[k] for k in SwapJournal.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackupError(
            f"unreadable swap journal {path} ({type(exc).__name__}): see which of "
            f"{env.database.name}, {env.database.name}__old_* and __restore_* holds the data"
        ) from None


def write_journal(env: Environment, journal: SwapJournal) -> None:
    """Write the journal durably (temp file, fsync, rename, fsync the folder) before the phase runs."""
    path = journal_path(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{JOURNAL}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(asdict(journal), f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def remove_stale_journal_temps(env: Environment) -> list[str]:
    """Journal temp files of runs killed while writing one (the journal itself is renamed into place)."""
    done = []
    for tmp in env.state_dir.glob(f".{JOURNAL}.*") if env.state_dir.is_dir() else ():
        tmp.unlink(missing_ok=True)
        done.append(f"removed {tmp}, left by an interrupted restore")
    return done


def remove_journal(env: Environment) -> None:
    path = journal_path(env)
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)


def enter(env: Environment, journal: SwapJournal, phase: str) -> SwapJournal:
    """Record that the swap enters `phase`, then run it. The test hook kills the process here."""
    assert phase in PHASES, phase
    journal = SwapJournal(**{**asdict(journal), "phase": phase})
    write_journal(env, journal)
    crash_point(phase)
    return journal


# Sessions and statements -------------------------------------------------------------------------


def admin(env: Environment, app: str = APP) -> psycopg.Connection:
    """A maintenance-database session whose statements give up instead of waiting on locks."""
    options = f"-c lock_timeout={int(LOCK_TIMEOUT_S * 1000)} -c statement_timeout={int(STATEMENT_TIMEOUT_S * 1000)}"
    return psycopg.connect(
        **env.database.conninfo(env.database.maintenance_db), autocommit=True, application_name=app, options=options
    )


def exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def allows_connections(conn: psycopg.Connection, name: str) -> bool:
    row = conn.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return bool(row and row[0])


def set_connections(conn: psycopg.Connection, name: str, allow: bool) -> None:
    conn.execute(
        psycopg.sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
            psycopg.sql.Identifier(name), psycopg.sql.SQL("true" if allow else "false")
        )
    )


def drop(conn: psycopg.Connection, name: str) -> None:
    # Removing a large database's files may take longer than any swap statement: no statement
    # timeout here, but the lock timeout still holds (a failed drop is retried by the next operation).
    conn.execute("SET statement_timeout = 0")
    conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(name)))


def terminate(conn: psycopg.Connection, name: str) -> None:
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)
    )


def rename(conn: psycopg.Connection, old: str, new: str, *, terminate_first: bool) -> None:
    sql = psycopg.sql
    query = sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
    for attempt in range(_SWAP_ATTEMPTS):
        if terminate_first:
            terminate(conn, old)
        try:
            conn.execute(query)
            return
        except psycopg.errors.ObjectInUse:
            # A client reconnected between terminate and rename; try again shortly.
            if attempt == _SWAP_ATTEMPTS - 1:
                raise
            time.sleep(0.2)


def _stop_orphans(conn: psycopg.Connection, app: str, wait_s: float = 10.0) -> None:
    """Terminate the sessions a dead swap left in the server (a RENAME still waiting on a lock would
    otherwise go through later), and wait until they are gone."""
    deadline = time.monotonic() + wait_s
    while True:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (app,),
        ).fetchall()
        if not rows:
            return
        if time.monotonic() > deadline:
            raise BackupError(f"sessions of the interrupted swap ({app}) do not end")
        time.sleep(0.05)


# Recovery ----------------------------------------------------------------------------------------


def recover_swap(
    env: Environment,
    journal: SwapJournal,
    *,
    restore_files: Callable[[str], list[str]],
    log: Log,
    redact: Redactor,
) -> str:
    """Finish or undo the swap the journal describes; returns what was done. `restore_files(backup_id)`
    writes the backup's state files (for the forward direction). BackupError when it cannot."""
    name, scratch, old = journal.database, journal.scratch, journal.old
    try:
        with admin(env, app=f"{APP}-recover") as conn:
            _stop_orphans(conn, journal.app)
            forward = journal.phase in _FORWARD and not exists(conn, scratch) and exists(conn, name)
            if forward:
                restore_files(journal.backup_id)
                if exists(conn, old):
                    drop(conn, old)
                if not allows_connections(conn, name):
                    set_connections(conn, name, True)
                text = (
                    f"finished the swap of backup {journal.backup_id} (interrupted at {journal.phase}): "
                    f"{name} holds the restored data, state files restored from the backup"
                    + (f", dropped {old}" if journal.had_current else "")
                )
            else:
                if not exists(conn, name) and exists(conn, old):
                    rename(conn, old, name, terminate_first=False)
                if exists(conn, name) and not allows_connections(conn, name):
                    set_connections(conn, name, True)
                drop(conn, scratch)
                kept = f"{name} kept as it was" if journal.had_current else f"{name} left absent, as it was"
                text = (
                    f"undid the swap of backup {journal.backup_id} (interrupted at {journal.phase}): "
                    f"{kept}, dropped {scratch}"
                )
    except psycopg.Error as exc:
        raise BackupError(
            redact(
                f"could not recover the interrupted swap of backup {journal.backup_id} "
                f"(phase {journal.phase}; data in {name}, {old} or {scratch}): {exc}"
            )
        ) from None
    remove_journal(env)
    log.info(text)
    return text


_SUFFIX = re.compile(r"^[0-9a-f]{8}$")


def drop_leftovers(env: Environment, *, log: Log, redact: Redactor) -> list[str]:
    """Drop the scratch databases (`<db>__restore_*`, and `<db>__old_*` beside a live `<db>`) left
    by runs that died. Call it with no swap journal left and under the environment's lock."""
    name = env.database.name
    done: list[str] = []
    with admin(env, app=f"{APP}-recover") as conn:
        rows = [r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
        kinds = {kind: scratch_name(name, kind, "x" * 8)[:-8] for kind in ("restore", "old")}
        found = {
            kind: [d for d in rows if d.startswith(prefix) and _SUFFIX.match(d[len(prefix) :])]
            for kind, prefix in kinds.items()
        }
        if name not in rows and len(found["old"]) == 1:
            # No journal says so, but the only copy of the data is there: put it back, never drop it.
            rename(conn, found["old"][0], name, terminate_first=False)
            set_connections(conn, name, True)
            done.append(f"renamed {found['old'][0]} back to {name}")
            found["old"] = []
        if name in rows or exists(conn, name):
            if not allows_connections(conn, name):
                set_connections(conn, name, True)
                done.append(f"{name} refused connections: allowed them again")
            for db in found["old"]:
                drop(conn, db)
                done.append(f"dropped {db}, left by an interrupted restore")
        elif found["old"]:
            log.warning(
                redact(
                    f"{name} does not exist and several {kinds['old']}* databases do: "
                    f"not touched, see which one holds the data"
                )
            )
        for db in found["restore"]:
            drop(conn, db)
            done.append(f"dropped {db}, left by an interrupted restore")
    for line in done:
        log.info(line)
    return done


def current_settings(conn: psycopg.Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype "
        "FROM pg_database WHERE datname = %s",
        (name,),
    ).fetchone()
    if row is None:
        return None
    return {"owner": row[0], "encoding": row[1], "collate": row[2], "ctype": row[3]}
