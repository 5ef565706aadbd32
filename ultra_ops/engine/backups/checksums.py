"""Checksums of a backup's files: size + sha256 per file, and the fsyncs that make them durable."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ultra_ops.engine.errors import IntegrityError

READ_CHUNK = 1 << 20  # 1 MiB reads keep memory flat whatever the dump size


def tree_size(folder: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            with contextlib.suppress(FileNotFoundError):  # pg_dump may rename while we count
                total += os.stat(os.path.join(dirpath, name)).st_size
    return total


def hash_file(path: Path, sync: bool = False) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(READ_CHUNK)
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
        results = list(pool.map(lambda r: hash_file(root / r, sync), paths))
    return {r: {"size": s, "sha256": d} for r, (s, d) in sorted(zip(paths, results, strict=True))}


def walk_files(folder: Path) -> list[str]:
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
