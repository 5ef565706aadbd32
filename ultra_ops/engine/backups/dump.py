"""The dump tools: running pg_dump/pg_restore, and hashing a directory-format dump as it is written."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ultra_ops.engine.backups.checksums import READ_CHUNK
from ultra_ops.engine.errors import BackupError
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Environment


def default_jobs(env: Environment) -> int:
    return env.backup.jobs or os.cpu_count() or 1


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


def tool_version(tool: str) -> str:
    try:
        return subprocess.run([tool, "--version"], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        raise BackupError(f"{tool} is not installed or does not run") from None


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
        self._buf = bytearray(READ_CHUNK)

    def _poll(self) -> int:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return 0
        view, moved = memoryview(self._buf), 0
        for name in names:
            if not self._DATA_FILE.fullmatch(name):
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
