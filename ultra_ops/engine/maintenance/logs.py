"""Logs: rotate the service's logs, archive a day's into `logs/archive/logs_YYYYMMDD.tar.gz` (the
release document's naming, readable by `tar -xzf`), and report the log folder's disk usage.

Rotation renames `<name>.log` to `<name>.log.YYYYMMDD` (the day it was last written); the services
reopen their log on the next line (WatchedFileHandler, or logrotate's `create` for others).
Archiving a day writes the archive under a temporary name, reads it back and compares every
member's size and sha256 with the original, renames it into place, and only then removes the
originals: a crash at any point loses no log line.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ultra_ops.engine.errors import OperationError
from ultra_ops.engine.files import fsync_dir, private_dir
from ultra_ops.engine.owners import owner_alive, this_process
from ultra_ops.engine.secrets import Log, NullLog
from ultra_ops.engine.settings import Environment

if TYPE_CHECKING:  # tarfile and the archive writer load when a day is archived, not with the code location
    import tarfile

    from ultra_ops.engine.maintenance.targz import AddFn, Digest, FillFn, Written

ARCHIVE_DIR = "archive"


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
    """`<name>.log.<day>`, or for a later rotation the same day `<name>.log.<day>.<n>` (the next free n)."""
    target = path.with_name(f"{path.name}.{day:%Y%m%d}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.{day:%Y%m%d}.{n}")
        n += 1
    return target


def rotate_logs(env: Environment, *, log: Log | None = None) -> list[str]:
    """Rename every non-empty `*.log` of the environment to `<name>.log.<day it was last written>`.

    Always a rename, never a copy: a writer still holding the file (until it reopens its log, as
    the sample service's WatchedFileHandler does on its next line) keeps writing into the renamed
    file, so no line falls between a copy and a delete. A second rotation the same day gets its own
    numbered file, archived with the day's others.
    """
    log = log or NullLog()
    rotated = []
    if not env.log_dir.is_dir():
        return rotated
    for path in sorted(env.log_dir.glob("*.log")):
        st = path.stat()
        if st.st_size == 0:
            continue
        target = rotated_name(path, datetime.fromtimestamp(st.st_mtime).date())
        os.rename(path, target)
        rotated.append(target.name)
    if rotated:
        fsync_dir(env.log_dir)
        log.info(f"rotated {', '.join(rotated)}")
    return rotated


def _day_files(env: Environment, day: date) -> list[Path]:
    """The day's rotated files: `<name>.log.<day>` and later rotations' `<name>.log.<day>.<n>`."""
    day_name = re.compile(rf"\.log\.{day:%Y%m%d}(\.\d+)?$")
    return sorted(p for p in env.log_dir.glob(f"*.log.{day:%Y%m%d}*") if day_name.search(p.name) and p.is_file())


def _verify(archive: Path, written: Written, expected: dict[str, Digest], name: str) -> None:
    """Read the archive back: every gzip member inflates where it was written, and the tar holds exactly
    the expected files, each with its size and sha256."""
    from ultra_ops.engine.maintenance import targz

    try:
        seen = targz.read_tar_gz(archive, written.members, codec_name=written.codec)
    except (targz.CorruptArchive, OSError) as exc:
        raise OperationError(f"log archive {name} does not read back ({exc}); the logs stay") from None
    if seen != expected:
        raise OperationError(f"log archive {name} does not match the logs it was written from")


def _carry_and_add(old_archive: Path | None, files: list[Path]) -> FillFn:
    """The members of the day's earlier archive that are not written again, then the files."""
    names = {p.name for p in files}

    def fill(add: AddFn, tar: tarfile.TarFile) -> None:
        import tarfile

        from ultra_ops.engine.maintenance import targz

        if old_archive is not None:
            with tarfile.open(old_archive, "r:gz") as old:
                for member in old:
                    src = old.extractfile(member)
                    if src is not None and member.name not in names:
                        add(member, src)
        targz.add_files(files)(add, tar)

    return fill


def archive_logs(env: Environment, day: date, *, log: Log | None = None, codec: str | None = None) -> ArchiveReport:
    """Archive day D's rotated logs into `archive/logs_YYYYMMDD.tar.gz`, verified, then remove them.

    Running it again for a day adds what was rotated since to the same archive. `codec` forces the
    compressor ("libdeflate" or "zlib"); by default libdeflate when it is installed.
    """
    from ultra_ops.engine.maintenance import targz

    log = log or NullLog()
    folder = private_dir(env.log_dir / ARCHIVE_DIR)
    files = _day_files(env, day)
    archive = folder / f"logs_{day:%Y%m%d}.tar.gz"
    usage = shutil.disk_usage(env.log_dir)
    base = {
        "environment": env.name,
        "day": day.isoformat(),
        "disk_free_bytes": usage.free,
        "disk_total_bytes": usage.total,
    }
    if not files:
        log.info(f"no rotated logs of {day} to archive" + (f"; {archive.name} exists" if archive.exists() else ""))
        return ArchiveReport(
            **base, archive=str(archive) if archive.exists() else None, log_dir_bytes=_folder_bytes(env.log_dir)
        )
    stats = {p: p.stat() for p in files}
    _remove_stale_temps(folder, log)
    me = this_process()
    tmp = folder / f".{archive.name}.tmp-{me['pid']}-{me['start']}"
    try:
        with open(tmp, "wb", opener=lambda path, flags: os.open(path, flags, 0o600)) as out:  # private from birth
            written = targz.write_tar_gz(
                out, _carry_and_add(archive if archive.exists() else None, files), codec_name=codec
            )
            out.flush()
            os.fsync(out.fileno())
        # What was read is what the originals hold: each file's sha256 was taken as it went into the tar.
        expected = written.files
        _verify(tmp, written, expected, archive.name)
        os.chmod(tmp, 0o600)
        os.rename(tmp, archive)
        fsync_dir(folder)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    removed = []
    for path in files:
        st = path.stat()
        if (st.st_size, st.st_mtime_ns) != (stats[path].st_size, stats[path].st_mtime_ns):
            # Written to while it was archived: the archived part is safe, the rest stays for the next run.
            log.warning(f"{path.name} changed while it was archived; kept")
            continue
        path.unlink()
        removed.append(path)
    files = removed
    fsync_dir(env.log_dir)
    report = ArchiveReport(
        **base,
        archive=str(archive),
        files=[p.name for p in files],
        bytes_in=sum(expected[p.name][0] for p in files),
        bytes_archived=archive.stat().st_size,
        log_dir_bytes=_folder_bytes(env.log_dir),
    )
    log.info(
        f"archived {len(files)} log files of {day} into {archive.name} "
        f"({report.bytes_in / 1e6:.1f} MB -> {report.bytes_archived / 1e6:.1f} MB), verified; originals removed"
    )
    return report


def _remove_stale_temps(folder: Path, log: Log) -> None:
    """Temp archives whose writer died (kill -9, a lost machine): the originals are still there."""
    host = socket.gethostname()
    for tmp in folder.glob(".logs_*.tar.gz.tmp-*"):
        pid, _, start = tmp.name.rsplit(".tmp-", 1)[1].partition("-")
        if owner_alive({"host": host, "pid": pid, "start": start or None}) is False:
            tmp.unlink(missing_ok=True)
            log.info(f"removed {tmp.name}, left by a writer that died; its logs were not removed")


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
