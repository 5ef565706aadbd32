"""Files and folders that hold secrets or output: private to the operator from creation on.

Folders are 0700 and files 0600 whatever the umask: created that way, never widened afterwards.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` and each missing parent with mode 0700; folders that exist are left alone."""
    missing: list[Path] = []
    p = Path(path)
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(folder, PRIVATE_DIR_MODE)  # a umask may have taken owner bits away
    return path


def narrow(path: Path, mode: int) -> int | None:
    """Take away every permission of `path` beyond `mode`; the old mode if it was wider, else None."""
    try:
        old = path.stat().st_mode & 0o777
    except FileNotFoundError:
        return None
    if old & ~mode:
        os.chmod(path, old & mode)
        return old
    return None


def open_private_append(path: Path) -> int:
    """A descriptor appending to `path`, created 0600 (and narrowed to 0600 if it was wider)."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    return fd


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries to disk: a rename or a new file in it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of the range's dirty pages, do not wait


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range (the os module has none), looked up once; None where there is none."""
    try:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


def start_writeback(fd: int, offset: int, length: int) -> bool:
    """Start writing `length` bytes of `fd` from `offset` to disk, without waiting (Linux's
    sync_file_range). A large file written in one go (a streamed dump) then goes to disk as it
    arrives, and its final fsync waits for the last part only, not for all of it (the kernel would
    otherwise keep hundreds of MB dirty until then). Whether the kernel took it; elsewhere, or if
    the call fails, nothing is done: the fsync does it all as before."""
    function = _sync_file_range()
    return function is not None and function(fd, offset, length, _SYNC_FILE_RANGE_WRITE) == 0
