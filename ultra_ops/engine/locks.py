"""One lock per environment for every operation that changes it (deploy, rollback, restore).

The lock is an exclusive flock on `<state_dir>/lock`. The kernel drops it when the holding process
dies, so a crashed run never blocks the environment; the holder writes who it is into the file so
that a refused operation can name the run that holds the lock. Runs started from the UI and from
the shell go through the same file.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from ultra_ops.engine.errors import LockHeldError
from ultra_ops.engine.settings import Environment


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
    """Who holds the environment's lock, or None when it is free."""
    path = _lock_path(env)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(path) or {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


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
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> EnvironmentLock:
        if self._fd is not None:
            return self
        path = _lock_path(self.env)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read_holder(path)
            raise LockHeldError(
                f"environment {self.env.name} is locked by {describe_holder(holder)}; "
                f"refusing to start {self.holder['operation']}"
            ) from None
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
