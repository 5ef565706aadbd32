"""Logs: rotate the service's logs, archive a day's into `logs/archive/logs_YYYYMMDD.tar.gz` (the
release document's naming, readable by `tar -xzf`), and report the log folder's disk usage.

Rotation renames `<name>.log` to `<name>.log.YYYYMMDD` (the day it was last written); the services
reopen their log on the next line (WatchedFileHandler, or logrotate's `create` for others).
Archiving a day writes the archive under a temporary name, reads it back and compares every
member's size and sha256 with the original, renames it into place, and only then removes the
originals: a crash at any point loses no log line.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import IO

from ultra_ops.engine.backups.checksums import fsync_dir, hash_file
from ultra_ops.engine.errors import OperationError
from ultra_ops.engine.files import private_dir
from ultra_ops.engine.secrets import Log, NullLog
from ultra_ops.engine.settings import Environment

ARCHIVE_DIR = "archive"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveReport:
    environment: str
    day: str  # YYYY-MM-DD
    archive: str | None  # path of logs_YYYYMMDD.tar.gz, None when there was nothing to archive
    files: list[str] = field(default_factory=list)
    bytes_in: int = 0
    bytes_archived: int = 0
    log_dir_bytes: int = 0
    disk_free_bytes: int = 0
    disk_total_bytes: int = 0

    @property
    def disk_used_ratio(self) -> float:
        return round(1 - self.disk_free_bytes / self.disk_total_bytes, 4) if self.disk_total_bytes else 0.0


def rotated_name(path: Path, day: date) -> Path:
    return path.with_name(f"{path.name}.{day:%Y%m%d}")


def rotate_logs(env: Environment, *, log: Log | None = None) -> list[str]:
    """Rename every non-empty `*.log` of the environment to `<name>.log.<day it was last written>`."""
    log = log or NullLog()
    rotated = []
    if not env.log_dir.is_dir():
        return rotated
    for path in sorted(env.log_dir.glob("*.log")):
        st = path.stat()
        if st.st_size == 0:
            continue
        target = rotated_name(path, datetime.fromtimestamp(st.st_mtime).date())
        if target.exists():
            # A second rotation the same day: append, so the day's file stays one file.
            with open(path, "rb") as src, open(target, "ab") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
                dst.flush()
                os.fsync(dst.fileno())
            path.unlink()
        else:
            os.rename(path, target)
        rotated.append(target.name)
    if rotated:
        fsync_dir(env.log_dir)
        log.info(f"rotated {', '.join(rotated)}")
    return rotated


def _day_files(env: Environment, day: date) -> list[Path]:
    return sorted(p for p in env.log_dir.glob(f"*.log.{day:%Y%m%d}") if p.is_file())


def _verify(archive: Path, expected: dict[str, tuple[int, str]]) -> None:
    """Read the archive back: exactly the expected members, each with its size and sha256."""
    seen: dict[str, tuple[int, str]] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                src = tar.extractfile(member)
                if src is None:
                    continue
                digest, size = hashlib.sha256(), 0
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                seen[member.name] = (size, digest.hexdigest())
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise OperationError(f"log archive {archive.name} does not read back ({type(exc).__name__})") from None
    if seen != expected:
        raise OperationError(f"log archive {archive.name} does not match the logs it was written from")


def archive_logs(env: Environment, day: date, *, log: Log | None = None) -> ArchiveReport:
    """Archive day D's rotated logs into `archive/logs_YYYYMMDD.tar.gz`, verified, then remove them.

    Running it again for a day adds what was rotated since to the same archive.
    """
    log = log or NullLog()
    folder = private_dir(env.log_dir / ARCHIVE_DIR)
    files = _day_files(env, day)
    archive = folder / f"logs_{day:%Y%m%d}.tar.gz"
    usage = shutil.disk_usage(env.log_dir)
    base = {"environment": env.name, "day": day.isoformat(), "disk_free_bytes": usage.free,
            "disk_total_bytes": usage.total}
    if not files:
        log.info(f"no rotated logs of {day} to archive" + (f"; {archive.name} exists" if archive.exists() else ""))
        return ArchiveReport(**base, archive=str(archive) if archive.exists() else None,
                             log_dir_bytes=_folder_bytes(env.log_dir))
    expected = {p.name: hash_file(p) for p in files}
    tmp = folder / f".{archive.name}.tmp-{os.getpid()}"
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
            carried: dict[str, tuple[int, str]] = {}
            if archive.exists():  # earlier parts of the same day stay in its archive
                with tarfile.open(archive, "r:gz") as old:
                    for member in old:
                        src = old.extractfile(member)
                        if src is None or member.name in expected:
                            continue
                        reader = _HashingReader(src)
                        tar.addfile(member, reader)
                        carried[member.name] = (member.size, reader.hexdigest())
            for path in files:
                tar.add(path, arcname=path.name)
        expected.update(carried)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _verify(tmp, expected)
        os.chmod(tmp, 0o600)
        os.rename(tmp, archive)
        fsync_dir(folder)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for path in files:
        path.unlink()
    fsync_dir(env.log_dir)
    report = ArchiveReport(**base, archive=str(archive), files=[p.name for p in files],
                           bytes_in=sum(expected[p.name][0] for p in files), bytes_archived=archive.stat().st_size,
                           log_dir_bytes=_folder_bytes(env.log_dir))
    log.info(f"archived {len(files)} log files of {day} into {archive.name} "
             f"({report.bytes_in / 1e6:.1f} MB -> {report.bytes_archived / 1e6:.1f} MB), verified; originals removed")
    return report


class _HashingReader:
    """A file object that hashes what is read through it."""

    def __init__(self, src: IO[bytes]) -> None:
        self.src, self.digest = src, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.src.read(size)
        self.digest.update(data)
        return data

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
