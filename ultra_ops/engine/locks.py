"""One lock per environment for every operation that changes it (deploy, rollback, restore).

An environment on a host of its own is locked on that host (hosts/lock.py: a lock that every
machine deploying to it sees, held by an ssh session, released within a bounded time when its
holder dies or loses its network, and `check()`ed before each change). The rest of this docstring
is about the lock of an environment on this machine; both name their holder with the same record
and messages.

The local lock is an exclusive flock on `<state_dir>/lock`. The kernel drops it when the holding
process dies, so a crashed run never blocks the environment; the holder writes who it is into the
file so that a refused operation can name the run that holds the lock. Runs started from the UI and
from the shell go through the same file.

The file always holds a whole record for a reader to name: a new holder overwrites the last one
(write, then cut to length: never an empty file), and a holder marks its record `releasing` before
it drops the lock, so an operation refused in that moment says the lock is being released. Between
taking the lock and writing its record a new holder is named by its pid, from the kernel's table
of flocks.
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
from typing import TYPE_CHECKING

from ultra_ops.engine import procfs
from ultra_ops.engine.clock import local_time
from ultra_ops.engine.errors import InputError, LockHeldError
from ultra_ops.engine.files import private_dir
from ultra_ops.engine.owners import owner_alive, this_process, this_user
from ultra_ops.engine.secrets import Log
from ultra_ops.engine.settings import Environment

if TYPE_CHECKING:
    from ultra_ops.engine.hosts.lock import HostLock

_POLL_S = 0.2
# Each try of a lock on a host is an ssh connection: a gentler poll while waiting for it.
_HOST_POLL_S = 1.0
# A lock on a host seen held, then free when its holder is read (released in that moment): tried
# again at once, this many times, before it is refused as held by an unknown holder.
_RACED_TRIES = 5
# How long a reader waits for a record in flux (half written, releasing, or a dead holder's that a new
# holder is about to overwrite) to settle: a new holder writes its record within milliseconds.
_SETTLE_S = 0.5


def _lock_path(env: Environment) -> Path:
    return env.state_dir / "lock"


def describe_holder(holder: dict | None, timezone: str = "UTC") -> str:
    """Who holds a lock, as an operator reads it: its start in the config's `timezone`."""
    if not holder:
        return "another process (holder unknown)"
    parts = [f"{holder.get('operation', 'an operation')}"]
    if holder.get("run_id"):
        parts.append(f"run {holder['run_id']}")
    if holder.get("pid") and holder.get("user"):
        parts.append(f"by {holder['user']} (pid {holder['pid']} on {holder.get('host')})")
    elif holder.get("pid"):
        parts.append(f"pid {holder['pid']} on {holder.get('host')}")
    if holder.get("started_at"):
        parts.append(f"since {local_time(holder['started_at'], timezone)}")
    if holder.get("releasing"):
        parts.append("(the lock is being released: try again)")
    elif holder.get("unrecorded"):
        parts.append("(which has just taken the lock and not yet written its record)")
    return " ".join(parts)


def lock_holder(env: Environment) -> dict | None:
    """Who holds the environment's lock, or None when it is free.

    Only looks: taking the lock to test it, even for a moment, could make a real deploy that
    starts in that moment be refused. The kernel's table of flocks says whether anyone holds it.
    An environment on a host is asked over ssh (bounded by its connect timeout; a HostError when
    the host does not answer).
    """
    if env.host is not None:
        from ultra_ops.engine.hosts.lock import HostLock

        return HostLock(env).look()
    path = _lock_path(env)
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    held = procfs.flock_held(st)
    if held is False:
        return None
    holder = _read_holder(path)
    if held is None and holder and (not _pid_alive(holder) or holder.get("releasing")):
        return None  # no /proc/locks: fall back to whether the recorded holder still runs
    if held is None and not holder:
        return None
    return holder or {}


def _pid_alive(holder: dict) -> bool:
    return owner_alive(holder) is not False  # another host's holder: trust the record


def _settled(record: dict | None) -> bool:
    return bool(record) and not record.get("releasing") and _pid_alive(record)


def _read_holder(path: Path) -> dict | None:
    """The holder's record, read until it settles (_SETTLE_S). Unsettled: a process holding the
    flock that has not written its record, named by its pid from the kernel's flock table; else the
    last record, marked releasing; None when there is neither."""
    deadline = time.monotonic() + _SETTLE_S
    record = None
    while True:
        try:
            text = path.read_text()
        except OSError:
            return None
        try:
            parsed = json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            parsed = None  # half overwritten: read again
        if isinstance(parsed, dict):
            record = parsed
            if _settled(record):
                return record
        if time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    pids = _flock_pids(path)
    if pids and (not record or pids[0] != record.get("pid")):
        # Taken by a process that has not written its record (yet): the kernel names it.
        return {"pid": pids[0], "host": socket.gethostname(), "unrecorded": True}
    if record:
        # Releasing, or its process ended (the kernel dropped the lock): either way on its way out.
        return {**record, "releasing": True}
    return None


def _flock_pids(path: Path) -> list[int]:
    try:
        return procfs.flock_pids(path.stat()) or []
    except OSError:
        return []


def _write_record(fd: int, record: dict) -> None:
    # Overwrite, then cut to length: a reader meanwhile sees the old record or an unparsable mix
    # (and reads again), never an empty file.
    data = json.dumps(record).encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


class EnvironmentLock:
    """Exclusive lock of one environment; use as a context manager or acquire()/release()."""

    def __init__(self, env: Environment, *, operation: str, run_id: str | None = None) -> None:
        self.env = env
        self.holder = {
            "environment": env.name,
            "operation": operation,
            "run_id": run_id,
            "user": this_user(),
            **this_process(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self._fd: int | None = None  # the held local lock's
        self._fd_open: int | None = None  # the local lock file's while trying to take it
        self._held_remote = False
        self._remote: HostLock | None = None
        if env.host is not None:
            from ultra_ops.engine.hosts.lock import HostLock

            self._remote = HostLock(env)

    @property
    def held(self) -> bool:
        if self._remote is not None:
            return self._remote.lost is None and self._held_remote
        return self._fd is not None

    @property
    def lost(self) -> str | None:
        """Why a lock this operation took is no longer held (only a lock on a host can be lost)."""
        return self._remote.lost if self._remote is not None and self._held_remote else None

    def check(self) -> None:
        """Before a change: raise (hosts.lock.LockLost) when the lock was lost, so that the
        operation stops there and never acts beside the lock's next holder."""
        if self._remote is not None and self._held_remote:
            self._remote.check()

    def acquire(self, *, wait_s: float = 0.0, log: Log | None = None) -> EnvironmentLock:
        """Take the lock; while another operation holds it, wait up to `wait_s` seconds, then refuse."""
        if self._fd is not None or self._held_remote:
            return self
        if not math.isfinite(wait_s):  # a launch form's `inf` would wait forever, `nan` never time out
            raise InputError(f"lock wait must be a finite number of seconds, got {wait_s}")
        deadline = time.monotonic() + max(0.0, wait_s)
        told = False
        raced = 0
        try_once = self._try_remote if self._remote is not None else self._try_local
        poll_s = _HOST_POLL_S if self._remote is not None else _POLL_S
        while True:
            self.holder["started_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            taken, holder = try_once()
            if taken:
                return self
            if holder is None and raced < _RACED_TRIES:
                raced += 1  # released between the try and the look: try again now
                continue
            if time.monotonic() >= deadline:
                self._close_local()
                waited = f" after waiting {wait_s:g} s" if wait_s > 0 else ""
                raise LockHeldError(
                    f"environment {self.env.name} is locked by {describe_holder(holder, self.env.timezone)}; "
                    f"refusing to start {self.holder['operation']}{waited}"
                ) from None
            if log is not None and not told:
                log.info(
                    f"environment {self.env.name} is locked by {describe_holder(holder, self.env.timezone)}; "
                    f"waiting up to {wait_s:g} s"
                )
                told = True
            # flock has no timeout; a short poll keeps the wait bounded without a helper thread.
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

    def _try_local(self) -> tuple[bool, dict | None]:
        path = _lock_path(self.env)
        if self._fd_open is None:
            private_dir(path.parent)
            self._fd_open = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd_open, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False, _read_holder(path) or {}
        _write_record(self._fd_open, self.holder)
        os.fsync(self._fd_open)
        self._fd, self._fd_open = self._fd_open, None
        return True, None

    def _try_remote(self) -> tuple[bool, dict | None]:
        assert self._remote is not None
        taken, holder = self._remote.try_acquire(self.holder)
        self._held_remote = taken
        return taken, holder

    def _close_local(self) -> None:
        if self._fd_open is not None:
            os.close(self._fd_open)
            self._fd_open = None

    def release(self) -> None:
        if self._remote is not None:
            self._held_remote = False
            self._remote.release()
            return
        if self._fd is None:
            return
        try:
            # Still held: whoever is refused from now until the unlock reads that it is on its way out.
            _write_record(self._fd, {**self.holder, "releasing": True})
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
