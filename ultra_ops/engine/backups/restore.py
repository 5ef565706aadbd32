"""Restore: put an environment's database and state files back to exactly what a backup holds.

Order matters: checksums and the archive's member list are checked before anything is touched,
then a safety backup is taken, then the database is rebuilt in a scratch database and swapped in
by renames (so a failed pg_restore leaves the current database as it was), then the state files
are replaced atomically one by one. Services are not stopped or started here: the caller does.
"""

from __future__ import annotations

import os
import secrets as _random
import shutil
import tarfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

import psycopg
from psycopg import sql

from ultra_ops.engine.backups.checksums import fsync_dir
from ultra_ops.engine.backups.create import create_backup, state_file_targets
from ultra_ops.engine.backups.dump import default_jobs, run_pg_tool
from ultra_ops.engine.backups.store import DUMP_DIR, DUMP_FILE, FILES_ARCHIVE, SAFETY_LABEL, BackupInfo, verify_backup
from ultra_ops.engine.errors import BackupError, IntegrityError
from ultra_ops.engine.secrets import Log, NullLog, Redactor, read_env_file
from ultra_ops.engine.settings import Environment

_MAX_PG_IDENTIFIER = 63
_SWAP_ATTEMPTS = 10
# Session settings for pg_restore's connections. synchronous_commit=off is safe: the scratch
# database is dropped if anything fails, and the synchronous rename at the swap flushes the WAL
# behind it. A larger maintenance_work_mem speeds up the index builds that dominate restores.
_RESTORE_PGOPTIONS = "-c synchronous_commit=off -c maintenance_work_mem=256MB"


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
            tmp = dest.parent / f".{dest.name}.uo-restore-{_random.token_hex(4)}"
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
    return restored


def _scratch_name(base: str, kind: str, suffix: str) -> str:
    # PostgreSQL silently truncates identifiers past 63 bytes; truncating the base ourselves keeps
    # the suffix, so two restores can never collide on a truncated name.
    tail = f"__{kind}_{suffix}"
    head = base.encode()[: _MAX_PG_IDENTIFIER - len(tail)].decode(errors="ignore")
    return head + tail


def _admin(env: Environment) -> psycopg.Connection:
    return psycopg.connect(**env.database.conninfo(env.database.maintenance_db), autocommit=True)


def _current_database(conn: psycopg.Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype "
        "FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if row is None:
        return None
    return {"owner": row[0], "encoding": row[1], "collate": row[2], "ctype": row[3]}


def _create_scratch(conn: psycopg.Connection, scratch: str, current: dict[str, Any] | None) -> None:
    # template0: the result must hold exactly the dump's objects, not whatever template1 carries.
    query = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(scratch))
    if current:
        query = sql.SQL("{} OWNER {} ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            query, sql.Identifier(current["owner"]), sql.Literal(current["encoding"]),
            sql.Literal(current["collate"]), sql.Literal(current["ctype"]))
    conn.execute(query)


def _drop(conn: psycopg.Connection, name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _terminate(conn: psycopg.Connection, name: str) -> None:
    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))


def _rename(conn: psycopg.Connection, old: str, new: str, *, terminate: bool) -> None:
    query = sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
    for attempt in range(_SWAP_ATTEMPTS):
        if terminate:
            _terminate(conn, old)
        try:
            conn.execute(query)
            return
        except psycopg.errors.ObjectInUse:
            # A client reconnected between terminate and rename; try again shortly.
            if attempt == _SWAP_ATTEMPTS - 1:
                raise
            time.sleep(0.2)


def _restore_database(env: Environment, info: BackupInfo, log: Log, redact: Redactor) -> None:
    name = env.database.name
    suffix = _random.token_hex(4)
    scratch = _scratch_name(name, "restore", suffix)
    old = _scratch_name(name, "old", suffix)
    try:
        with _admin(env) as conn:
            current = _current_database(conn, name)
            _create_scratch(conn, scratch, current)
    except psycopg.Error as exc:
        raise BackupError(redact(f"cannot create scratch database {scratch}: {exc}")) from None

    keep_scratch = False  # once swapped in, or when a human must sort out a failed swap
    try:
        if info.format == "directory":
            source = str(info.path / DUMP_DIR)
            fmt = "-Fd"
        else:
            source = str(info.path / DUMP_FILE)
            fmt = "-Fc"
        # A custom-format file is seekable, so pg_restore can run parallel jobs on it too.
        # -d takes a conninfo string, quoted so that no database name is parsed as one.
        target = "dbname='" + scratch.replace("\\", "\\\\").replace("'", "\\'") + "'"
        args = ["pg_restore", fmt, "-j", str(default_jobs(env)), "--exit-on-error", "-d", target, source]
        log.info(f"restore {info.id}: pg_restore into scratch database {scratch}")
        options = f"{os.environ.get('PGOPTIONS', '')} {_RESTORE_PGOPTIONS}".strip()
        t0 = time.perf_counter()
        run_pg_tool(args, env, app="restore", redact=redact, extra_env={"PGOPTIONS": options},
                    heartbeat=lambda elapsed: log.info(f"restore {info.id}: pg_restore running for {elapsed:.0f}s"))
        log.info(f"restore {info.id}: pg_restore took {time.perf_counter() - t0:.1f}s")

        log.info(f"restore {info.id}: swapping {scratch} in as {name}")
        with _admin(env) as conn:
            if current is not None:
                # Refuse new connections first, so the terminate + rename below cannot be raced.
                conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
                try:
                    _rename(conn, name, old, terminate=True)
                except psycopg.Error:
                    conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(
                        sql.Identifier(name)))
                    raise
            try:
                _rename(conn, scratch, name, terminate=True)
            except psycopg.Error:
                if current is not None:
                    try:
                        _rename(conn, old, name, terminate=False)
                        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(
                            sql.Identifier(name)))
                    except psycopg.Error as exc:
                        keep_scratch = True
                        # The one state that needs a human: say exactly where the data is.
                        raise BackupError(redact(
                            f"restore {info.id}: swap failed and could not be undone: the current data is "
                            f"in database {old} (connections disabled), the restored data in {scratch}: "
                            f"{exc}")) from None
                raise
            keep_scratch = True
            if current is not None:
                try:
                    t0 = time.perf_counter()
                    _drop(conn, old)
                    log.info(f"restore {info.id}: dropped the replaced database in {time.perf_counter() - t0:.1f}s")
                except psycopg.Error as exc:
                    log.warning(redact(f"restore {info.id}: could not drop {old}: {exc}; drop it by hand"))
    except psycopg.Error as exc:
        raise BackupError(redact(f"restore {info.id}: database swap failed, {name} unchanged: {exc}")) from None
    finally:
        if not keep_scratch:
            try:
                with _admin(env) as conn:
                    _drop(conn, scratch)
            except psycopg.Error as exc:
                log.warning(redact(f"restore {info.id}: could not drop scratch database {scratch}: {exc}"))


def restore_backup(
    env: Environment,
    backup_id: str,
    *,
    log: Log | None = None,
    redact: Redactor | None = None,
    safety_backup: bool = True,
    verified: BackupInfo | None = None,
) -> dict:
    """Restore the database and state files of a backup. Returns
    {"backup_id", "safety_backup_id" (or None), "files_restored" (destination paths)}.
    `verified`: what verify_backup returned for this id when the caller checked it before stopping
    anything (a rollback does); the checksums are then not read a second time.
    InputError: bad or unknown id; IntegrityError: the backup does not match its manifest (nothing
    touched); BackupError: a step failed (the message says what state things are in)."""
    log = log or NullLog()
    redact = redact or Redactor.for_environment(env)
    started = time.perf_counter()
    if verified is not None and verified.id == backup_id and verified.environment == env.name:
        info = verified
    else:
        info = verify_backup(env, backup_id)
    plan = _plan_files(env, info, log)
    log.info(f"restore {backup_id}: checksums verified ({len(info.files)} files, "
             f"{time.perf_counter() - started:.1f}s)")

    safety_id = None
    if safety_backup:
        version = read_env_file(env.env_file).get("ULTRA_VERSION") or None
        if version is not None and (len(version) > 64 or not version.isprintable()):
            version = None
        safety = create_backup(env, version=version, label=f"{SAFETY_LABEL} {backup_id}",
                               log=log, redact=redact)
        safety_id = safety.id
        log.info(f"restore {backup_id}: safety backup {safety_id} taken")

    _restore_database(env, info, log, redact)
    try:
        restored = _restore_files(env, info, plan)
    except (OSError, tarfile.TarError) as exc:
        where = f"; safety backup {safety_id}" if safety_id else ""
        raise BackupError(redact(f"restore {backup_id}: database restored but state files failed: {exc}{where}")
                          ) from None
    log.info(f"restore {backup_id}: done ({len(restored)} state files)")
    return {"backup_id": backup_id, "safety_backup_id": safety_id, "files_restored": restored}
