"""One lock per environment for every operation that changes it (deploy, rollback, restore).

The lock is an exclusive flock on `<state_dir>/lock`. The kernel drops it when the holding process
dies, so a crashed run never blocks the environment; the holder writes who it is into the file so
that a refused operation can name the run that holds the lock. Runs started from the UI and from
the shell go through the same file.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from ultra_ops.engine import procfs
from ultra_ops.engine.errors import InputError, LockHeldError
from ultra_ops.engine.files import private_dir
from ultra_ops.engine.owners import owner_alive, process_start
from ultra_ops.engine.secrets import Log
from ultra_ops.engine.settings import Environment

_POLL_S = 0.2


def _lock_path(env: Environment) -> Path:
    return env.state_dir / "lock"


def describe_holder(holder: dict | None) -> str:
    if not holder:
        return "another process (holder unknown)"
    parts = [f"{holder.get('operation', 'an operation')}"]
    if holder.get("run_id"):
        parts.append(f"run {holder['run_id']}")
    parts.append(f"pid {holder.get('pid')} on {holder.get('host')}")
    if holder.get("started_at"):
        parts.append(f"since {holder['started_at']}")
    return " ".join(parts)


def lock_holder(env: Environment) -> dict | None:
    """Who holds the environment's lock, or None when it is free.

    Only looks: taking the lock to test it, even for a moment, could make a real deploy that
    starts in that moment be refused. The kernel's table of flocks says whether anyone holds it.
    """
    path = _lock_path(env)
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    held = procfs.flock_held(st)
    if held is False:
        return None
    holder = _read_holder(path)
    if held is None and holder and not _pid_alive(holder):
        return None  # no /proc/locks: fall back to whether the recorded holder still runs
    if held is None and not holder:
        return None
    return holder or {}


def _pid_alive(holder: dict) -> bool:
    return owner_alive(holder) is not False  # another host's holder: trust the record


def _read_holder(path: Path) -> dict | None:
    # The holder truncates and rewrites the file right after locking; retry briefly on an empty read.
    for _ in range(20):
        try:
            text = path.read_text()
        except OSError:
            return None
        if text.strip():
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                pass
        time.sleep(0.01)
    return None


class EnvironmentLock:
    """Exclusive lock of one environment; use as a context manager or acquire()/release()."""

    def __init__(self, env: Environment, *, operation: str, run_id: str | None = None) -> None:
        self.env = env
        self.holder = {
            "environment": env.name,
            "operation": operation,
            "run_id": run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start": process_start(os.getpid()),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, wait_s: float = 0.0, log: Log | None = None) -> EnvironmentLock:
        """Take the lock; while another operation holds it, wait up to `wait_s` seconds, then refuse."""
        if self._fd is not None:
            return self
        if not math.isfinite(wait_s):  # a launch form's `inf` would wait forever, `nan` never time out
            raise InputError(f"lock wait must be a finite number of seconds, got {wait_s}")
        path = _lock_path(self.env)
        private_dir(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + max(0.0, wait_s)
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_holder(path)
                if time.monotonic() >= deadline:
                    os.close(fd)
                    waited = f" after waiting {wait_s:g} s" if wait_s > 0 else ""
                    raise LockHeldError(
                        f"environment {self.env.name} is locked by {describe_holder(holder)}; "
                        f"refusing to start {self.holder['operation']}{waited}"
                    ) from None
                if log is not None and not told:
                    log.info(
                        f"environment {self.env.name} is locked by {describe_holder(holder)}; "
                        f"waiting up to {wait_s:g} s"
                    )
                    told = True
                # flock has no timeout; a short poll keeps the wait bounded without a helper thread.
                time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))
        self.holder["started_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self.holder).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> EnvironmentLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
