"""Creating a backup: dump the database, archive the state files, write the manifest, rename into place."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ultra_ops import __version__
from ultra_ops.engine.backups.checksums import hash_files, tree_size, walk_files
from ultra_ops.engine.backups.counts import SnapshotCounts
from ultra_ops.engine.backups.dump import DumpFollower, checked_tool_version, default_jobs
from ultra_ops.engine.backups.events import announce
from ultra_ops.engine.backups.hosted import HostedDatabase, on_host
from ultra_ops.engine.backups.lock_wait import lock_wait_failure, lock_wait_option, run_pg_dump
from ultra_ops.engine.backups.store import (
    DUMP_DIR,
    DUMP_FILE,
    FILES_ARCHIVE,
    KINDS,
    MANIFEST,
    MANIFEST_VERSION,
    TMP_PREFIX,
    BackupInfo,
    clean_stale_temps,
    kind_of_label,
    load_backup,
    new_backup_id,
    owner_file,
    write_owner_file,
)
from ultra_ops.engine.errors import BackupError, InputError
from ultra_ops.engine.files import fsync_dir, private_dir
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import BACKUP_FORMATS, Environment

_MAX_LABEL = 200
# Less than this left where a backup failed: the disk was full, whatever the tool said in its locale.
_FULL_BYTES = 1 << 20


def _relative_name(path: Path, bases: tuple[Path, ...]) -> str:
    resolved = path.resolve()
    for base in bases:
        try:
            return resolved.relative_to(base.resolve()).as_posix()
        except ValueError:
            continue
    return path.name


def deployment_folder(env: Environment) -> Path:
    """The folder the release document's manual rollback runs in: the one holding the backups
    (`ls -l backups/<environment>/`), where `cp -r rollback/* ./` puts the extracted files back."""
    return env.backup_dir.parent


def archive_name(env: Environment, path: Path) -> str:
    """The member name of a state file in files.tar.gz: relative to the deployment folder when
    under it, else to env.root, else the base name. So in the shipped layouts (backups/ beside
    each environment's root) the env file is `<environment>/.env.<environment>`: the document's
    `cp -r rollback/* ./` copies it back, where a top-level dotfile is skipped by the `*`."""
    return _relative_name(path, (deployment_folder(env), env.root))


def state_file_targets(env: Environment) -> dict[str, Path]:
    """Archive member name -> destination, for every state file the environment knows about;
    backups written before the names were relative to the deployment folder named them relative
    to env.root, and are restored by those names too."""
    targets = {_relative_name(p, (env.root,)): p for p in env.state_files()}
    targets.update({archive_name(env, p): p for p in env.state_files()})
    return targets


def out_of_space(exc: BaseException, folder: Path) -> bool:
    """Whether a backup failed because the disk holding `folder` is full: ENOSPC or EDQUOT from our
    own writes, the same words from pg_dump, or (a tool speaking another locale) the disk found
    with less than _FULL_BYTES left while the partial backup is still on it."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    if "No space left on device" in text or "Disk quota exceeded" in text:
        return True
    try:
        return shutil.disk_usage(folder).free < _FULL_BYTES
    except OSError:
        return False


def mount_point(path: Path) -> Path:
    """The mount point of the file system that holds `path`: the disk an operator must free."""
    p = path.absolute()
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def disk_full_message(env: Environment, backup_id: str, written: int) -> str:
    """The one error of a backup that ran out of space, after its partial folder was removed."""
    root = env.backups_path
    try:
        usage = shutil.disk_usage(root)
        space = f"{usage.free / 1e6:.1f} MB free of {usage.total / 1e6:.1f} MB"
    except OSError:
        space = "free space unknown"
    return (
        f"backup {backup_id} of {env.name} failed: no space left on the disk mounted at {mount_point(root)}, "
        f"which holds {root} (it ran out after {written / 1e6:.1f} MB; {space} again now that the partial "
        f"backup is removed). Nothing was kept and {env.name} was not changed: free space there, or set "
        f"backup_dir to a larger disk, and run it again"
    )


def _check_options(label: str, version: str | None, fmt: str, jobs: int, compression: int, kind: str) -> None:
    if kind not in KINDS:
        raise InputError(f"backup kind {kind!r} is not one of {', '.join(KINDS)}")
    if fmt not in BACKUP_FORMATS:
        raise InputError(f"backup format {fmt!r} is not one of {', '.join(BACKUP_FORMATS)}")
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise InputError(f"backup jobs must be a positive integer, got {jobs!r}")
    if not isinstance(compression, int) or isinstance(compression, bool) or not 0 <= compression <= 9:
        raise InputError(f"backup compression must be 0 to 9, got {compression!r}")
    for what, text, limit in (("label", label, _MAX_LABEL), ("version", version, 64)):
        if text is None:
            continue
        if not isinstance(text, str) or len(text) > limit or any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise InputError(f"backup {what} must be at most {limit} printable characters")


def _write_files_archive(env: Environment, dest: Path) -> list[str]:
    """files.tar.gz of the state files that exist. Built in-process: a few small files, where
    starting `tar` would cost more than the work. Mode 0600: the env file holds secrets."""
    members = []
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
            seen = set()
            for path in env.state_files():
                if not path.is_file():
                    continue
                name = archive_name(env, path)
                if name in seen:
                    continue
                seen.add(name)
                data = path.read_bytes()
                st = path.stat()
                ti = tarfile.TarInfo(name)
                ti.size, ti.mode, ti.mtime = len(data), st.st_mode & 0o777, int(st.st_mtime)
                tar.addfile(ti, io.BytesIO(data))
                members.append(name)
        raw.flush()
        os.fsync(raw.fileno())
    return members


class _NoSnapshot(Exception):
    """The snapshot could not be opened: the dump ends before pg_dump starts, and the snapshot's own
    error is raised (not a BackupError: _stream_dump passes it on as it is)."""


def _stream_with_counts(
    env: Environment,
    hosted: HostedDatabase,
    backup_id: str,
    level: int,
    tmp: Path,
    redact: Redactor,
    heartbeat: Callable[[float], None],
) -> tuple[dict, dict[str, int]]:
    """The hosted dump and its row counts, in one snapshot as for any backup, with the snapshot
    opened alongside the dump's start: its connection (through the run's tunnel: several round
    trips to the host) is made while ssh opens the dump's session, finds the container and starts
    the tool there, which then waits for the snapshot's id before pg_dump runs (hosted.dump)."""
    counts = SnapshotCounts(env, redact)
    pool = ThreadPoolExecutor(1, thread_name_prefix="uo-snapshot")
    opening = pool.submit(counts.__enter__)
    pool.shutdown(wait=False)

    def snapshot() -> str:
        try:
            return opening.result().snapshot
        except BaseException:
            raise _NoSnapshot from None

    try:
        try:
            streamed = _stream_dump(env, hosted, backup_id, level, snapshot, tmp, redact, heartbeat)
        except BaseException:
            # A snapshot that could not be opened is the cause (pg_dump waits for it): said as such.
            # exception() waits for the opening, which its connect timeout bounds.
            failed = opening.exception()
            if failed is not None:
                raise failed from None
            raise
        return streamed, counts.counts()
    finally:
        if opening.exception() is None:
            counts.__exit__(None, None, None)


def _stream_dump(
    env: Environment,
    hosted: HostedDatabase,
    backup_id: str,
    level: int,
    snapshot: Callable[[], str],
    tmp: Path,
    redact: Redactor,
    heartbeat: Callable[[float], None],
) -> dict:
    """pg_dump on the environment's host, its output streamed into `tmp` here; BackupError saying
    what a failure left (a cut network: nothing, here or there)."""
    args = ["-Fc", "-Z", str(level), lock_wait_option(env)]
    try:
        return hosted.dump(args, tmp / DUMP_FILE, app="backup", heartbeat=heartbeat, snapshot=snapshot)
    except BackupError as exc:
        failure = lock_wait_failure(env, exc, redact)
        raise BackupError(
            f"backup {backup_id} of {env.name} failed: {failure}; nothing kept: the partial dump here is "
            f"removed (no backup listed) and the dump never touched the host's disk (pg_dump there stops "
            f"as soon as it cannot write to the lost connection)"
        ) from None


def create_backup(
    env: Environment,
    *,
    version: str | None = None,
    label: str = "manual",
    log: Log | None = None,
    redact: Redactor | None = None,
    format: str | None = None,
    jobs: int | None = None,
    compression: int | None = None,
    kind: str | None = None,
) -> BackupInfo:
    """Dump the database and archive the state files into a new backup; returns its info and tells
    the listeners (events.announce). The manifest records the row count of every table in the
    dump's own snapshot, for restore tests. `kind` (KINDS) defaults from the label.
    Raises InputError for bad options (nothing written) and BackupError when a step fails (the
    temp folder is removed, no backup appears)."""
    log = log or NullLog()
    redact = redact or Redactor.for_environment(env)
    hosted = HostedDatabase(env, redact) if on_host(env) else None
    # On a host of its own, the dump is streamed from there: one file, pg_dump's custom format.
    fmt = format if format is not None else ("custom" if hosted else env.backup.format)
    if hosted and fmt != "custom":
        raise InputError(f"backups of {env.name} are streamed from its host in custom format: {fmt!r} format cannot be")
    n_jobs = jobs if jobs is not None else (1 if hosted else default_jobs(env))
    level = compression if compression is not None else env.backup.compression
    kind = kind or kind_of_label(label)
    _check_options(label, version, fmt, n_jobs, level, kind)

    root = env.backups_path
    try:
        private_dir(root)
    except OSError as exc:
        raise BackupError(redact(f"cannot create {root}: {exc.strerror}")) from None
    clean_stale_temps(env, log)
    # On a host, the database container's own pg_dump: the server's version by construction (it says
    # which as it starts).
    pg_dump_version = None if hosted else checked_tool_version("pg_dump", env, redact)
    backup_id = new_backup_id()
    while (root / backup_id).exists() or (root / (TMP_PREFIX + backup_id)).exists():
        backup_id = new_backup_id()
    created_at = datetime.now(UTC).isoformat(timespec="microseconds")
    tmp = root / (TMP_PREFIX + backup_id)
    final = root / backup_id
    started = time.perf_counter()
    try:
        tmp.mkdir(mode=0o700)
        write_owner_file(tmp)
        if fmt == "directory":
            # -j: one worker per core, tables dumped in parallel; -Z1: gzip is the bottleneck,
            # level 1 is ~3x faster than the default 6 for a few % more bytes.
            args = ["pg_dump", "-Fd", "-j", str(n_jobs), "-Z", str(level), "-f", str(tmp / DUMP_DIR)]
        else:
            args = ["pg_dump", "-Fc", "-Z", str(level), "-f", str(tmp / DUMP_FILE)]
        where = f" on {hosted.host.where}" if hosted else ""
        log.info(f"backup {backup_id}: dumping database {env.database.name}{where} ({fmt} format)")
        heartbeat = lambda elapsed: log.info(  # noqa: E731
            f"backup {backup_id}: {tree_size(tmp) / 1e6:.0f} MB written after {elapsed:.0f}s"
        )
        # pg_dump connects with PG* variables (libpq_env); the db name is one of them, not an arg.
        follower = DumpFollower(tmp / DUMP_DIR) if fmt == "directory" else None
        if hosted:
            streamed, tables = _stream_with_counts(env, hosted, backup_id, level, tmp, redact, heartbeat)
        else:
            with SnapshotCounts(env, redact) as snapshot:
                if follower:
                    follower.start()
                try:
                    snap = f"--snapshot={snapshot.snapshot}"
                    run_pg_dump([*args, snap], env, app="backup", redact=redact, heartbeat=heartbeat)
                    tables = snapshot.counts()
                except BaseException:
                    if follower:
                        follower.finish(complete=False)
                    raise
        # pg_dump fsyncs its own output; the followed files need no second read.
        followed = follower.finish(complete=True) if follower else {}
        if hosted:
            followed = {DUMP_FILE: streamed}  # hashed as it arrived
            pg_dump_version = hosted.versions.get("pg_dump")
        dumped = time.perf_counter()
        members = _write_files_archive(env, tmp / FILES_ARCHIVE)
        rels = [r for r in walk_files(tmp) if r != MANIFEST and r not in followed]
        # sync=True: cheap after pg_dump's own fsync, and it covers the archive we just wrote.
        files = dict(sorted({**followed, **hash_files(tmp, rels, sync=True)}.items()))
        manifest: dict[str, Any] = {
            "manifest_version": MANIFEST_VERSION,
            "id": backup_id,
            "environment": env.name,
            "version": version,
            "label": label,
            "kind": kind,
            "created_at": created_at,
            "format": fmt,
            "database": {
                "name": env.database.name,
                "host": env.database.host,
                "port": env.database.port,
                **({"dumped_on": env.host.describe()} if env.host is not None else {}),
            },
            "options": {"jobs": n_jobs if fmt == "directory" else 1, "compression": level},
            "tools": {"pg_dump": pg_dump_version, "ultra_ops": __version__},
            "state_files": members,
            "tables": tables,
            "duration_s": round(time.perf_counter() - started, 3),
            "files": files,
        }
        fd = os.open(tmp / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        for dirpath, _, _ in os.walk(tmp):
            fsync_dir(Path(dirpath))
        os.rename(tmp, final)
        fsync_dir(root)
        owner_file(tmp).unlink(missing_ok=True)
    except BaseException as exc:
        full = isinstance(exc, (OSError, BackupError)) and out_of_space(exc, root)
        written = tree_size(tmp) if full and tmp.is_dir() else 0
        shutil.rmtree(tmp, ignore_errors=True)
        owner_file(tmp).unlink(missing_ok=True)
        if full:
            raise BackupError(redact(disk_full_message(env, backup_id, written))) from None
        if isinstance(exc, OSError):
            raise BackupError(redact(f"backup {backup_id} failed: {exc}")) from None
        raise
    info = load_backup(env, final)
    log.info(
        f"backup {backup_id}: {info.size_bytes / 1e6:.1f} MB, {len(tables)} tables in "
        f"{time.perf_counter() - started:.1f}s (dump {dumped - started:.1f}s)"
    )
    announce(info)
    return info
