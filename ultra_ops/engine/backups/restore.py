"""Restore: put an environment's database and state files back to exactly what a backup holds.

Order matters: checksums and the archive's member list are checked before anything is touched,
then a safety backup is taken, then the database is rebuilt in a scratch database (prepare_restore:
all of this can run while the environment serves), then the scratch database is swapped in by
renames and the state files are replaced atomically one by one (complete_restore: the part that
needs the services stopped). Each swap phase is journaled first (swap.py), so a crash or an
interrupt at any point is finished or undone by `recover_environment` (release/recover.py), which the next
operation on the environment runs. Services are not stopped or started here: the caller does.
"""

from __future__ import annotations

import os
import secrets as _random
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ultra_ops.engine.backups import hosted, swap
from ultra_ops.engine.backups.checksums import hash_file
from ultra_ops.engine.backups.create import create_backup, state_file_targets
from ultra_ops.engine.backups.dump import checked_tool_version, default_jobs
from ultra_ops.engine.backups.store import (
    FILES_ARCHIVE,
    SAFETY_LABEL,
    BackupInfo,
    get_backup,
    verify_backup,
)
from ultra_ops.engine.deployed import deployed_version, mark_restored
from ultra_ops.engine.errors import BackupError, IntegrityError
from ultra_ops.engine.files import fsync_dir
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment

psycopg = lazy_module("psycopg")

# Session settings for pg_restore's connections. synchronous_commit=off is safe: the scratch
# database is dropped if anything fails, and the synchronous rename at the swap flushes the WAL
# behind it. A larger maintenance_work_mem speeds up the index builds that dominate restores.
_RESTORE_PGOPTIONS = "-c synchronous_commit=off -c maintenance_work_mem=256MB"
# A state file is written beside its destination as `.<name>.uo-restore-<hex>`, then renamed over it.
STATE_FILE_TEMP = ".uo-restore-"


def _plan_files(env: Environment, info: BackupInfo, log: Log) -> list[tuple[str, Path]]:
    """Member name -> destination for every state file in files.tar.gz. Refuses absolute names,
    `..`, links and anything but regular files: a tampered archive must not write elsewhere."""
    targets = state_file_targets(env)
    restored = set(env.restored_files())
    plan: list[tuple[str, Path]] = []
    try:
        with tarfile.open(info.path / FILES_ARCHIVE, "r:gz") as tar:
            for m in tar.getmembers():
                parts = PurePosixPath(m.name).parts
                if m.name.startswith("/") or not parts or ".." in parts or "\\" in m.name:
                    raise IntegrityError(f"backup {info.id}: {FILES_ARCHIVE} member {m.name!r} has an unsafe path")
                if m.isdir():
                    continue
                if not m.isfile():
                    raise IntegrityError(f"backup {info.id}: {FILES_ARCHIVE} member {m.name!r} is not a regular file")
                dest = targets.get(m.name)
                if dest is None:
                    log.warning(f"backup {info.id}: {m.name} is not a state file of {env.name} now; not restored")
                    continue
                if dest not in restored:
                    log.info(f"backup {info.id}: {m.name} is shared with other environments; not restored")
                    continue
                plan.append((m.name, dest))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise IntegrityError(f"backup {info.id}: {FILES_ARCHIVE} is unreadable ({type(exc).__name__})") from None
    return plan


def _restore_files(env: Environment, info: BackupInfo, plan: list[tuple[str, Path]]) -> list[str]:
    restored = []
    with tarfile.open(info.path / FILES_ARCHIVE, "r:gz") as tar:
        for name, dest in plan:
            member = tar.getmember(name)
            src = tar.extractfile(member)
            assert src is not None  # a regular file, checked by _plan_files
            # Env files hold secrets: 0600 whatever the archive says; others keep their mode.
            mode = 0o600 if dest == env.env_file else (member.mode & 0o777) or 0o600
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.parent / f".{dest.name}{STATE_FILE_TEMP}{_random.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                    out.flush()
                    os.fchmod(out.fileno(), mode)
                    os.fsync(out.fileno())
                os.replace(tmp, dest)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            fsync_dir(dest.parent)
            restored.append(str(dest))
    if str(env.env_file) in restored:
        mark_restored(env)
    return restored


@dataclass(frozen=True)
class PreparedRestore:
    """A backup restored into a scratch database, not yet swapped in: the journal says so too."""

    backup_id: str
    database: str
    scratch: str
    safety_backup_id: str | None


def _create_scratch(conn: psycopg.Connection, scratch: str, current: dict[str, Any] | None) -> None:
    # template0: the result must hold exactly the dump's objects, not whatever template1 carries.
    query = psycopg.sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(psycopg.sql.Identifier(scratch))
    if current:
        query = psycopg.sql.SQL("{} OWNER {} ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            query,
            psycopg.sql.Identifier(current["owner"]),
            psycopg.sql.Literal(current["encoding"]),
            psycopg.sql.Literal(current["collate"]),
            psycopg.sql.Literal(current["ctype"]),
        )
    conn.execute(query)


def _restore_files_of(env: Environment, backup_id: str, log: Log) -> list[str]:
    """Write a backup's state files (recovery finishing a swap): its archive is checked first."""
    info = get_backup(env, backup_id)
    size, digest = hash_file(info.path / FILES_ARCHIVE)
    if {"size": size, "sha256": digest} != info.files.get(FILES_ARCHIVE):
        raise IntegrityError(f"backup {backup_id}: checksum mismatch in {FILES_ARCHIVE}")
    return _restore_files(env, info, _plan_files(env, info, log))


def recover_interrupted_restore(env: Environment, journal: swap.SwapJournal, log: Log, redact: Redactor) -> str:
    """Finish or undo the database swap a restore journaled (swap.py), writing the backup's state
    files where it goes forward; returns what was done."""
    return swap.recover_swap(
        env, journal, restore_files=lambda backup_id: _restore_files_of(env, backup_id, log), log=log, redact=redact
    )


def _after_failure(env: Environment, journal: swap.SwapJournal, exc: BaseException, log: Log, redact: Redactor) -> str:
    """Errors and interrupts take one path: recover at once, as the next operation would."""
    try:
        return recover_interrupted_restore(env, journal, log, redact)
    except Exception as rexc:  # noqa: BLE001 - the journal stays: the next operation recovers
        return (
            f"recovery failed too ({redact(str(rexc))}); the swap journal is kept: run "
            f"`ultra-ops recover --environment {env.name}`"
        )


def _restore_into_scratch(env: Environment, info: BackupInfo, log: Log, redact: Redactor) -> swap.SwapJournal:
    """Create a scratch database and pg_restore the backup into it; the current database is not touched."""
    name = env.database.name
    if swap.read_journal(env) is not None:
        # Only outside the environment's lock (taking it recovers first): never write over the record.
        raise BackupError(
            f"restore {info.id}: {env.name} has an interrupted database swap; run "
            f"`ultra-ops recover --environment {env.name}` first"
        )
    try:
        with swap.admin(env) as conn:
            current = swap.current_settings(conn, name)
    except psycopg.Error as exc:
        raise BackupError(redact(f"restore {info.id}: cannot reach the database server: {exc}")) from None
    journal = swap.enter(env, swap.new_journal(env, info.id, current is not None), "restoring")
    scratch = journal.scratch
    try:
        try:
            with swap.admin(env, app=journal.app) as conn:
                _create_scratch(conn, scratch, current)
        except psycopg.Error as exc:
            raise BackupError(redact(f"cannot create scratch database {scratch}: {exc}")) from None
        where = " on the environment's host" if hosted.on_host(env) and info.format == "custom" else ""
        log.info(f"restore {info.id}: pg_restore into scratch database {scratch}{where}")
        t0 = time.perf_counter()
        hosted.restore_dump(
            env,
            info,
            scratch,
            app="restore",
            options=_RESTORE_PGOPTIONS,
            jobs=default_jobs(env),
            redact=redact,
            heartbeat=lambda elapsed: log.info(f"restore {info.id}: pg_restore running for {elapsed:.0f}s"),
        )
        log.info(f"restore {info.id}: pg_restore took {time.perf_counter() - t0:.1f}s")
        return swap.enter(env, journal, "prepared")
    except hosted.DatabaseHostLost as exc:
        # The database is on the lost host: dropping the scratch database now would wait out a
        # connect timeout for nothing. The journal says what to drop once the host answers.
        raise BackupError(
            f"{exc}; nothing swapped: {name} is as it was; the scratch database {scratch} and the swap journal "
            f"are left for `ultra-ops recover --environment {env.name}` (or the next operation) to drop once "
            f"the host answers"
        ) from None
    except BaseException:
        try:
            recover_interrupted_restore(env, journal, log, redact)  # drops the scratch database, removes the journal
        except Exception as exc:  # noqa: BLE001 - the journal stays: the next operation recovers
            log.warning(redact(f"restore {info.id}: could not drop scratch database {scratch}: {exc}"))
        raise


def prepare_restore(
    env: Environment,
    backup_id: str,
    *,
    log: Log | None = None,
    redact: Redactor | None = None,
    safety_backup: bool = True,
    verified: BackupInfo | None = None,
) -> PreparedRestore:
    """Everything of a restore that can run while the environment still serves: check the backup,
    take the safety backup, restore the dump into a scratch database. The current database and
    state files are not touched. InputError, IntegrityError (nothing touched), BackupError."""
    log = log or NullLog()
    redact = redact or Redactor.for_environment(env)
    started = time.perf_counter()
    if not hosted.on_host(env):  # on a host, the database container's own pg_restore: the server's version
        checked_tool_version("pg_restore", env, redact)  # before anything is read or written
    if verified is not None and verified.id == backup_id and verified.environment == env.name:
        info = verified
    else:
        info = verify_backup(env, backup_id)
    _plan_files(env, info, log)  # a tampered archive is refused before anything is written
    log.info(f"restore {backup_id}: checksums verified ({len(info.files)} files, {time.perf_counter() - started:.1f}s)")
    safety_id = None
    if safety_backup:
        version = deployed_version(env)
        if version is not None and (len(version) > 64 or not version.isprintable()):
            version = None
        safety = create_backup(
            env, version=version, label=f"{SAFETY_LABEL} {backup_id}", kind="safety", log=log, redact=redact
        )
        safety_id = safety.id
        log.info(f"restore {backup_id}: safety backup {safety_id} taken")
    journal = _restore_into_scratch(env, info, log, redact)
    _checkpoint(env, backup_id, log, redact)
    return PreparedRestore(
        backup_id=backup_id, database=journal.database, scratch=journal.scratch, safety_backup_id=safety_id
    )


def _checkpoint(env: Environment, backup_id: str, log: Log, redact: Redactor) -> None:
    """CHECKPOINT after the restore into the scratch database, while the services still run, so that
    the restore's writes are not still being written back while they are stopped (at 1 GB under
    compose, one rollback without it saw dockerd take 1.3 s to finish the backend's stop, against
    0.15-0.3 s otherwise). Needs superuser or pg_checkpoint; without them, or when it fails, the
    restore goes on as before."""
    t0 = time.perf_counter()
    try:
        with swap.admin(env) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.Error as exc:
        log.info(redact(f"restore {backup_id}: no checkpoint before the swap ({' '.join(str(exc).split())})"))
        return
    log.info(f"restore {backup_id}: checkpoint in {time.perf_counter() - t0:.1f}s")


def discard_restore(
    env: Environment, prepared: PreparedRestore, *, log: Log | None = None, redact: Redactor | None = None
) -> None:
    """Drop a prepared restore that will not be swapped in (its rollback failed before the swap)."""
    log = log or NullLog()
    journal = swap.read_journal(env)
    if journal is not None and journal.scratch == prepared.scratch and journal.phase in ("restoring", "prepared"):
        recover_interrupted_restore(env, journal, log, redact or Redactor.for_environment(env))


def complete_restore(
    env: Environment,
    prepared: PreparedRestore,
    *,
    log: Log | None = None,
    redact: Redactor | None = None,
    drop_old: bool = True,
) -> list[str]:
    """Swap the prepared scratch database in and write the backup's state files; returns the files
    written. The part of a restore that needs the services stopped. Any failure or interrupt is
    recovered at once (before the final rename: the old database back as it was; after it: forward),
    and BackupError says which. The old database is dropped last; with drop_old=False it is left
    for finish_restore (a rollback drops it once the services run again: dropping a large database
    takes a while), and a run that dies before that leaves it to the next operation's recovery."""
    log = log or NullLog()
    redact = redact or Redactor.for_environment(env)
    bid = prepared.backup_id
    info = get_backup(env, bid)
    plan = _plan_files(env, info, log)
    journal = swap.read_journal(env)
    if journal is None or journal.scratch != prepared.scratch or journal.phase != "prepared":
        raise BackupError(
            f"restore {bid}: the prepared scratch database {prepared.scratch} is gone "
            f"(recovered after an interrupted run?); nothing was swapped"
        )
    name, scratch, old = journal.database, journal.scratch, journal.old
    log.info(f"restore {bid}: swapping {scratch} in as {name}")
    t0 = time.perf_counter()
    try:
        with swap.admin(env, app=journal.app) as conn:
            if not swap.exists(conn, scratch):
                raise BackupError(f"restore {bid}: scratch database {scratch} is gone; nothing was swapped")
            if journal.had_current:
                # Refuse new connections first, so the terminate + rename below cannot be raced.
                journal = swap.enter(env, journal, "disable")
                swap.set_connections(conn, name, False)
                journal = swap.enter(env, journal, "rename_old")
                swap.rename(conn, name, old, terminate_first=True)
            journal = swap.enter(env, journal, "rename_new")
            swap.rename(conn, scratch, name, terminate_first=True)
            swap.crash_point("rename_new:committed")
        journal = swap.enter(env, journal, "files")
        restored = _restore_files(env, info, plan)
        journal = swap.enter(env, journal, "drop_old")
    except BaseException as exc:
        outcome = _after_failure(env, journal, exc, log, redact)
        if isinstance(exc, psycopg.Error):
            raise BackupError(redact(f"restore {bid}: database swap failed: {exc}; {outcome}")) from None
        if isinstance(exc, (OSError, tarfile.TarError)):
            raise BackupError(redact(f"restore {bid}: state files failed: {exc}; {outcome}")) from None
        if isinstance(exc, BackupError):
            raise BackupError(f"{exc}; {outcome}") from None
        raise
    log.info(f"restore {bid}: swapped in {time.perf_counter() - t0:.2f}s")
    if drop_old:
        finish_restore(env, prepared, log=log, redact=redact)
    return restored


def finish_restore(
    env: Environment, prepared: PreparedRestore, *, log: Log | None = None, redact: Redactor | None = None
) -> None:
    """Drop the database a completed swap replaced and close its journal. A failure is only logged:
    the next operation on the environment drops it."""
    log = log or NullLog()
    redact = redact or Redactor.for_environment(env)
    journal = swap.read_journal(env)
    if journal is None or journal.scratch != prepared.scratch or journal.phase != "drop_old":
        return
    try:
        if journal.had_current:
            t0 = time.perf_counter()
            with swap.admin(env, app=journal.app) as conn:
                swap.drop(conn, journal.old)
            log.info(f"restore {prepared.backup_id}: dropped the replaced database in {time.perf_counter() - t0:.1f}s")
        swap.remove_journal(env)
    except psycopg.Error as exc:
        log.warning(
            redact(f"restore {prepared.backup_id}: could not drop {journal.old}: {exc}; the next operation drops it")
        )


def restore_backup(
    env: Environment,
    backup_id: str,
    *,
    log: Log | None = None,
    redact: Redactor | None = None,
    safety_backup: bool = True,
    verified: BackupInfo | None = None,
) -> dict:
    """Restore the database and state files of a backup: prepare_restore, then complete_restore.
    Returns {"backup_id", "safety_backup_id" (or None), "files_restored" (destination paths)}.
    `verified`: what verify_backup returned for this id when the caller checked it already.
    InputError: bad or unknown id; IntegrityError: the backup does not match its manifest (nothing
    touched); BackupError: a step failed (the message says what state things are in)."""
    log = log or NullLog()
    redact = redact or Redactor.for_environment(env)
    prepared = prepare_restore(env, backup_id, log=log, redact=redact, safety_backup=safety_backup, verified=verified)
    try:
        restored = complete_restore(env, prepared, log=log, redact=redact)
    except BackupError as exc:
        where = f"; safety backup {prepared.safety_backup_id}" if prepared.safety_backup_id else ""
        raise BackupError(f"{exc}{where}") from None
    log.info(f"restore {backup_id}: done ({len(restored)} state files)")
    return {"backup_id": backup_id, "safety_backup_id": prepared.safety_backup_id, "files_restored": restored}
