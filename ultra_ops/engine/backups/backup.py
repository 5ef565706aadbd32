"""Backups: one folder per backup holding the database dump, the state files and a manifest.

`backups/<environment>/<id>/` contains `manifest.json`, the dump (`database/` in pg_dump's
directory format or `database.dump` in custom format) and `files.tar.gz` with the state files.
A backup is written under `.tmp-<id>`, fsynced and renamed into place, so a crash never leaves
anything that list_backups shows; restore trusts only what verify_backup has checked.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import os
import re
import secrets as _random
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ultra_ops import __version__
from ultra_ops.engine.errors import BackupError, InputError, IntegrityError
from ultra_ops.engine.inputs import validate_backup_id
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import BACKUP_FORMATS, Environment

MANIFEST = "manifest.json"
FILES_ARCHIVE = "files.tar.gz"
DUMP_DIR = "database"
DUMP_FILE = "database.dump"
TMP_PREFIX = ".tmp-"
OWNER_FILE = ".owner"  # inside a temp folder only: who is writing it, for stale-temp cleanup
MANIFEST_VERSION = 1
STALE_TEMP_AGE_S = 3600.0
_CHUNK = 1 << 20  # 1 MiB reads keep memory flat whatever the dump size
_MAX_LABEL = 200
_ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{4,}$")


@dataclass(frozen=True)
class BackupInfo:
    id: str
    environment: str
    version: str | None
    created_at: str  # ISO 8601 UTC
    path: Path
    format: str  # "directory" | "custom"
    size_bytes: int
    files: dict[str, dict]  # relative path -> {"size": int, "sha256": str}
    label: str

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "environment": self.environment,
            "version": self.version,
            "created_at": self.created_at,
            "path": str(self.path),
            "format": self.format,
            "size_bytes": self.size_bytes,
            "files": {k: dict(v) for k, v in self.files.items()},
            "label": self.label,
        }


# --- helpers shared with restore.py ---------------------------------------------------------------


def default_jobs(env: Environment) -> int:
    return env.backup.jobs or os.cpu_count() or 1


def archive_name(env: Environment, path: Path) -> str:
    """The member name of a state file in files.tar.gz: relative to env.root when under it (so
    `tar -xzf files.tar.gz -C rollback/` recreates the environment's layout), else the base name."""
    try:
        return path.resolve().relative_to(env.root.resolve()).as_posix()
    except ValueError:
        return path.name


def state_file_targets(env: Environment) -> dict[str, Path]:
    """Archive member name -> destination, for every state file the environment knows about."""
    return {archive_name(env, p): p for p in env.state_files()}


def pg_env(env: Environment, app: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The child environment for pg_dump/pg_restore: the secret travels only here, never in argv."""
    return {**os.environ, **env.database.libpq_env(), "PGAPPNAME": f"ultra_ops-{app}", **(extra or {})}


def _die_with_parent() -> None:
    # A backup process killed with -9 must not leave pg_dump writing into a folder that the next
    # backup is about to clean up; Linux lets the child ask for SIGKILL when its parent dies.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_pg_tool(args: Sequence[str], env: Environment, *, app: str, redact: Redactor,
                extra_env: dict[str, str] | None = None, error: type[Exception] = BackupError,
                heartbeat: Callable[[float], None] | None = None, every_s: float = 15.0) -> str:
    """Run pg_dump/pg_restore with stdout/stderr captured (both are small: data goes to files).
    `heartbeat(elapsed_s)` is called every `every_s` while it runs, so long dumps show progress."""
    try:
        proc = subprocess.Popen(list(args), env=pg_env(env, app, extra_env), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent if os.name == "posix" else None)
    except FileNotFoundError:
        raise error(f"{args[0]} is not installed or not on PATH") from None
    started = time.monotonic()
    while True:
        try:
            out, err = proc.communicate(timeout=every_s)
            break
        except subprocess.TimeoutExpired:  # retrying communicate() loses no output
            if heartbeat is not None:
                heartbeat(time.monotonic() - started)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if proc.returncode != 0:
        tail = " | ".join((err or out or "").strip().splitlines()[-5:])
        raise error(redact(f"{Path(args[0]).name} exited {proc.returncode}: {tail}"))
    return out


def _tree_size(folder: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            with contextlib.suppress(FileNotFoundError):  # pg_dump may rename while we count
                total += os.stat(os.path.join(dirpath, name)).st_size
    return total


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hash_file(path: Path, sync: bool = False) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])  # hashlib releases the GIL for large buffers: threads run in parallel
            size += n
        if sync:
            os.fsync(f.fileno())
    return size, h.hexdigest()


def hash_files(root: Path, rel_paths: Iterable[str], *, sync: bool = False) -> dict[str, dict]:
    """size + sha256 of each file, hashed in parallel threads, biggest first to balance the load."""
    paths = sorted(rel_paths, key=lambda r: -(root / r).stat().st_size)
    workers = max(1, min(len(paths), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="uo-hash") as pool:
        results = list(pool.map(lambda r: _hash_file(root / r, sync), paths))
    return {r: {"size": s, "sha256": d} for r, (s, d) in sorted(zip(paths, results, strict=True))}


class DumpFollower(threading.Thread):
    """Hashes a directory-format dump's data files while pg_dump is still writing them.

    pg_dump writes each table's data file once, front to back, so the bytes already on disk are
    final: hashing them as they arrive takes the checksum pass off the backup's critical path
    (the biggest table's file would otherwise be hashed by one thread after the dump). A file that
    does not end as it was followed (other size or inode) is left to the ordinary hash after the dump.
    """

    _DATA_FILE = re.compile(r"^(blob_)?\d+\.dat(\.gz)?$")

    def __init__(self, folder: Path) -> None:
        super().__init__(name="uo-hash-follow", daemon=True)
        self.folder = folder
        self._stop_event = threading.Event()
        self._files: dict[str, tuple[Any, Any, list[int]]] = {}  # name -> (sha256, file, [size])
        self._buf = bytearray(_CHUNK)

    def _poll(self) -> int:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return 0
        view, moved = memoryview(self._buf), 0
        for name in names:
            if not self._DATA_FILE.match(name):
                continue
            if name not in self._files:
                self._files[name] = (hashlib.sha256(), open(self.folder / name, "rb", buffering=0), [0])
            digest, f, size = self._files[name]
            while n := f.readinto(self._buf):
                digest.update(view[:n])
                size[0] += n
                moved += n
        return moved

    def run(self) -> None:
        while not self._stop_event.is_set():
            if not self._poll():
                self._stop_event.wait(0.05)

    def finish(self, *, complete: bool) -> dict[str, dict]:
        """Stop following; with complete=True (pg_dump succeeded) read what is left and return
        {relative path: {size, sha256}} for every file followed to its end."""
        self._stop_event.set()
        self.join()
        done: dict[str, dict] = {}
        if complete:
            self._poll()
        for name, (digest, f, size) in self._files.items():
            try:
                same = os.fstat(f.fileno()).st_ino == (self.folder / name).stat().st_ino
                if complete and same and (self.folder / name).stat().st_size == size[0]:
                    done[f"{self.folder.name}/{name}"] = {"size": size[0], "sha256": digest.hexdigest()}
            except OSError:
                pass
            finally:
                f.close()
        return done


def _walk_files(folder: Path) -> list[str]:
    """Every regular file under folder, relative, POSIX separators; symlinks are an error."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                raise IntegrityError(f"backup {folder.name}: {p.relative_to(folder).as_posix()} is a symlink")
        for name in filenames:
            out.append((Path(dirpath) / name).relative_to(folder).as_posix())
    return sorted(out)


# --- reading ---------------------------------------------------------------------------------------


def _load(env: Environment, folder: Path) -> BackupInfo:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = {str(k): {"size": int(v["size"]), "sha256": str(v["sha256"])} for k, v in data["files"].items()}
        info = BackupInfo(
            id=str(data["id"]), environment=str(data["environment"]),
            version=None if data.get("version") is None else str(data["version"]),
            created_at=str(data["created_at"]), path=folder, format=str(data["format"]),
            size_bytes=sum(f["size"] for f in files.values()), files=files, label=str(data.get("label", "")),
        )
    except FileNotFoundError:
        raise BackupError(f"backup {folder.name} has no {MANIFEST}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackupError(f"backup {folder.name}: unreadable {MANIFEST} ({type(exc).__name__})") from None
    if info.id != folder.name or info.environment != env.name or info.format not in BACKUP_FORMATS:
        raise BackupError(f"backup {folder.name}: {MANIFEST} describes another backup "
                          f"(id {info.id!r}, environment {info.environment!r}, format {info.format!r})")
    return info


def list_backups(env: Environment) -> list[BackupInfo]:
    """Complete backups of the environment, newest first. Temp folders and folders whose manifest
    is missing or unreadable are not backups and are skipped."""
    root = env.backups_path
    if not root.is_dir():
        return []
    found = []
    for entry in os.scandir(root):
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            validate_backup_id(entry.name)
            found.append(_load(env, Path(entry.path)))
        except (InputError, BackupError):
            continue
    found.sort(key=lambda b: (b.created_at, b.id), reverse=True)
    return found


def prune_backups(env: Environment, *, keep: int | None = None, log: Log | None = None) -> list[str]:
    """Delete the oldest backups beyond `keep` (default: env.backup.keep; 0 keeps everything).
    Call it under the environment's lock, so no running restore loses the backup it reads. Each
    backup is renamed to a hidden name first: a crash mid-delete never leaves a half backup listed."""
    keep = env.backup.keep if keep is None else keep
    if keep <= 0:
        return []
    removed = []
    for info in list_backups(env)[keep:]:
        doomed = info.path.with_name(f"{TMP_PREFIX}pruned-{info.id}")
        os.rename(info.path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(info.id)
    if removed and log is not None:
        log.info(f"retention: kept the newest {keep} backups, removed {', '.join(removed)}")
    return removed


def get_backup(env: Environment, backup_id: str) -> BackupInfo:
    validate_backup_id(backup_id)
    folder = env.backups_path / backup_id
    if not (folder / MANIFEST).is_file() or folder.is_symlink():
        raise InputError(f"unknown backup id {backup_id!r} for environment {env.name} "
                         f"(see the list of backups in {env.backups_path})")
    return _load(env, folder)


def verify_backup(env: Environment, backup_id: str) -> BackupInfo:
    """Check that the folder holds exactly the manifest's files with their sizes and sha256.
    Cheap checks (missing, extra, size) come first so a truncated backup fails without hashing."""
    info = get_backup(env, backup_id)
    present = set(_walk_files(info.path)) - {MANIFEST}
    expected = set(info.files)
    for rel in sorted(expected | present):
        if rel not in present:
            raise IntegrityError(f"backup {backup_id}: {rel} is missing")
        if rel not in expected:
            raise IntegrityError(f"backup {backup_id}: {rel} is not in the manifest")
        size = (info.path / rel).stat().st_size
        if size != info.files[rel]["size"]:
            raise IntegrityError(f"backup {backup_id}: {rel} has {size} bytes, the manifest says "
                                 f"{info.files[rel]['size']}")
    actual = hash_files(info.path, expected)
    for rel in sorted(expected):
        if actual[rel]["sha256"] != info.files[rel]["sha256"] or actual[rel]["size"] != info.files[rel]["size"]:
            raise IntegrityError(f"backup {backup_id}: checksum mismatch in {rel}")
    if info.format == "directory" and not any(r.startswith(DUMP_DIR + "/") for r in expected):
        raise IntegrityError(f"backup {backup_id}: no {DUMP_DIR}/ dump")
    if info.format == "custom" and DUMP_FILE not in expected:
        raise IntegrityError(f"backup {backup_id}: no {DUMP_FILE}")
    if FILES_ARCHIVE not in expected:
        raise IntegrityError(f"backup {backup_id}: no {FILES_ARCHIVE}")
    return info


# --- writing ---------------------------------------------------------------------------------------


def new_backup_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + _random.token_hex(2)


def _process_start(pid: int) -> str | None:
    """The kernel's start time of a process: with the pid it identifies the process even after
    the pid is reused. None where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the "(comm)" field


def _owner_alive(owner: dict[str, Any]) -> bool | None:
    """True/False when the writer of a temp folder is known to be alive/dead, None if unknown."""
    if owner.get("host") != socket.gethostname():
        return None
    pid = int(owner["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    start = _process_start(pid)
    if start is not None and owner.get("start") is not None and start != owner["start"]:
        return False  # the pid was reused by another process
    return True


def clean_stale_temps(env: Environment, log: Log) -> list[str]:
    """Remove `.tmp-*` folders left by crashed backups: their writer (same host) is dead, or the
    writer is unknown (another host, or killed before it wrote its owner file) and the folder is
    older than an hour. A live writer's folder is kept however long its dump runs."""
    root = env.backups_path
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for entry in os.scandir(root):
        if not entry.name.startswith(TMP_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        try:
            alive = _owner_alive(json.loads((path / OWNER_FILE).read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            alive = None
        if alive is None:
            try:
                alive = time.time() - entry.stat(follow_symlinks=False).st_mtime <= STALE_TEMP_AGE_S
            except FileNotFoundError:
                continue
        if not alive:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(entry.name)
            log.info(f"removed {entry.name}: left by an interrupted backup")
    return removed


def _check_options(label: str, version: str | None, fmt: str, jobs: int, compression: int) -> None:
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


def _tool_version(tool: str) -> str:
    try:
        return subprocess.run([tool, "--version"], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        raise BackupError(f"{tool} is not installed or does not run") from None


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
) -> BackupInfo:
    """Dump the database and archive the state files into a new backup; returns its info.
    Raises InputError for bad options (nothing written) and BackupError when a step fails (the
    temp folder is removed, no backup appears)."""
    log = log or NullLog()
    fmt = format if format is not None else env.backup.format
    n_jobs = jobs if jobs is not None else default_jobs(env)
    level = compression if compression is not None else env.backup.compression
    _check_options(label, version, fmt, n_jobs, level)
    redact = redact or Redactor.for_environment(env)

    root = env.backups_path
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise BackupError(redact(f"cannot create {root}: {exc.strerror}")) from None
    clean_stale_temps(env, log)
    backup_id = new_backup_id()
    while (root / backup_id).exists() or (root / (TMP_PREFIX + backup_id)).exists():
        backup_id = new_backup_id()
    created_at = datetime.now(UTC).isoformat(timespec="microseconds")
    tmp = root / (TMP_PREFIX + backup_id)
    final = root / backup_id
    started = time.perf_counter()
    try:
        tmp.mkdir(mode=0o700)
        (tmp / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                  "start": _process_start(os.getpid())}))
        pg_dump_version = _tool_version("pg_dump")
        if fmt == "directory":
            # -j: one worker per core, tables dumped in parallel; -Z1: gzip is the bottleneck,
            # level 1 is ~3x faster than the default 6 for a few % more bytes.
            args = ["pg_dump", "-Fd", "-j", str(n_jobs), "-Z", str(level), "-f", str(tmp / DUMP_DIR)]
        else:
            args = ["pg_dump", "-Fc", "-Z", str(level), "-f", str(tmp / DUMP_FILE)]
        log.info(f"backup {backup_id}: dumping database {env.database.name} ({fmt} format)")
        # pg_dump connects with PG* variables (libpq_env); the db name is one of them, not an arg.
        follower = DumpFollower(tmp / DUMP_DIR) if fmt == "directory" else None
        if follower:
            follower.start()
        try:
            run_pg_tool(args, env, app="backup", redact=redact, heartbeat=lambda elapsed: log.info(
                f"backup {backup_id}: {_tree_size(tmp) / 1e6:.0f} MB written after {elapsed:.0f}s"))
        except BaseException:
            if follower:
                follower.finish(complete=False)
            raise
        # pg_dump fsyncs its own output; the followed files need no second read.
        followed = follower.finish(complete=True) if follower else {}
        dumped = time.perf_counter()
        members = _write_files_archive(env, tmp / FILES_ARCHIVE)
        (tmp / OWNER_FILE).unlink()
        rels = [r for r in _walk_files(tmp) if r != MANIFEST and r not in followed]
        # sync=True: cheap after pg_dump's own fsync, and it covers the archive we just wrote.
        files = dict(sorted({**followed, **hash_files(tmp, rels, sync=True)}.items()))
        manifest: dict[str, Any] = {
            "manifest_version": MANIFEST_VERSION,
            "id": backup_id,
            "environment": env.name,
            "version": version,
            "label": label,
            "created_at": created_at,
            "format": fmt,
            "database": {"name": env.database.name, "host": env.database.host, "port": env.database.port},
            "options": {"jobs": n_jobs if fmt == "directory" else 1, "compression": level},
            "tools": {"pg_dump": pg_dump_version, "ultra_ops": __version__},
            "state_files": members,
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
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise BackupError(redact(f"backup {backup_id} failed: {exc}")) from None
        raise
    info = _load(env, final)
    log.info(f"backup {backup_id}: {info.size_bytes / 1e6:.1f} MB in {time.perf_counter() - started:.1f}s "
             f"(dump {dumped - started:.1f}s)")
    return info
