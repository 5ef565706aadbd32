"""The lock of an environment that lives on a host of its own, held on that host.

Every machine that may change the environment (the platform, an operator's laptop) takes the same
lock, so it lives where the environment lives: an flock on `<host root>/state/lock` on the host,
held by a session that the holder keeps open over ssh for as long as it holds the lock.

The session runs, on the host, `flock -n <lock> sh -c <holder>` (only `sh`, util-linux's `flock`,
coreutils and /proc are assumed there). The holder writes its record (operation, run, user,
machine, pid, since when; nothing secret) next to the lock, atomically (a temporary name, then a
rename), says `locked`, then reads one heartbeat byte at a time with `timeout HOST_RELEASE_S head
-c 1` and echoes each one back. The lock is the flock process's: the kernel releases it the moment
that process ends, which it does when
- the holder releases: it closes the session's stdin, the holder reads end of file and exits;
- the holding process dies, even by kill -9: the ssh client reads end of file on its stdin (ultra_ops
  was the only writer), the host sees the same end of file at once;
- the network between them is cut, or the holding machine stops: no heartbeat reaches the host for
  HOST_RELEASE_S seconds, `timeout` ends the read, the holder exits. Never held forever.

Two holders never both act, because the holder counts the lock lost before the host may release
it, whatever the network does: a heartbeat sent at time s and echoed back proves that the host
restarted its HOST_RELEASE_S countdown at or after s, so the host keeps the lock at least until
s + HOST_RELEASE_S. The holder counts it held only until (last echoed heartbeat's send time) +
HOST_RELEASE_S - SAFETY_S, by the monotonic clock and the wall clock both (a machine that slept
with the lock held wakes up without it), and less long when the session ends (ssh's keepalives
notice a cut network in about 6 s) or a heartbeat cannot be written. The operation checks the lock before
each change: EnvironmentLocks.hold at the start of every step, and `checkpoint` before every
command that changes the environment on its host (the compose runtime's). A lost lock fails the
operation there, before that change, with a message naming the host and what happened, and
`recover` finishes or undoes what the steps before left. The bound assumes that both machines'
clocks run at the same rate (not that they agree on the time); SAFETY_S is what a change has
between its check and its start. A change already running when the lock is lost (one compose
command) is not stopped by the lock: on a cut network it cannot reach the host either.

A refused operation reads the holder's record in the same ssh command that tried the lock (one
bounded round trip): whose record it is is told from the kernel's table of flocks (/proc/locks: the
flock process that holds the lock, whose pid the holder writes into its record), so a record left by
a holder that was killed is never taken for the new holder's.

The session has an SSH connection of its own, never a session on the run's master (mux.py), which
the run's other commands share. Its heartbeats must not wait behind another session's data: on one
TCP connection, an echo queues behind whatever the host is sending at the time (a dump streamed
back on a slow link, megabytes of send buffer), and a late echo counts the lock lost mid-operation.
And the lock then ends only with its own session, whatever order a run's scopes close in. It costs
one connection per run (about 0.3 s).
"""

from __future__ import annotations

import collections
import json
import queue
import subprocess
import threading
import time
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from ultra_ops.engine import shell
from ultra_ops.engine.errors import OperationError
from ultra_ops.engine.hosts.files import disk_full
from ultra_ops.engine.hosts.ssh import (
    HostError,
    HostSetupError,
    HostUnreachable,
    RemoteCommandFailed,
    SshHost,
    classify,
)

if TYPE_CHECKING:
    from ultra_ops.engine.secrets import Redactor
    from ultra_ops.engine.settings import Environment

HEARTBEAT_S = 2.0
# The host drops the lock after this long without a heartbeat: a cut network frees it within it.
HOST_RELEASE_S = 10
# The holder stops counting on the lock this long before the host may drop it.
SAFETY_S = 3.0
# The holder script's exit code when another holds the lock (after printing who).
_REFUSED = 75
# How long answers may take beyond the ssh connection itself (mkdir, flock, the record's write).
_ANSWER_S = 10.0
_END_S = 5.0
_STDERR_KEPT = 16384

# Lines of the form `holder <record>`, `unrecorded` or `free`: who holds the lock in $1, read until
# the record is the current holder's (it writes it within milliseconds of taking the lock).
# `holders` prints the pid of the flock process that holds $1/lock, from the kernel's table.
_DESCRIBE = r"""
holders() {
  ino=$(stat -c %i -- "$1/lock" 2>/dev/null) || return 0
  # Read whole by cat, not line by line by `read`: the table changes between small reads, and an
  # entry removed before ours would make a later read skip ours.
  table=$(cat /proc/locks)
  while read -r _ kind _ _ pid id _; do
    [ "$kind" = FLOCK ] || continue
    case $id in *:"$ino") printf '%s\n' "$pid";; esac
  done <<TABLE
$table
TABLE
}
describe() {
  tries=0
  while :; do
    pid=$(holders "$1" | head -n 1)
    [ -n "$pid" ] || { echo free; return 0; }
    record=$(cat -- "$1/holder" 2>/dev/null || true)
    case $record in "{\"lock_pid\": $pid,"*) printf 'holder %s\n' "$record"; return 0;; esac
    tries=$((tries + 1))
    [ "$tries" -lt 10 ] || { echo unrecorded; return 0; }
    sleep 0.05
  done
}
"""

# $1 lock folder, $2 seconds without a heartbeat before the lock is dropped, $3 the holder's record
# (JSON), $4 the holder script below. Takes the lock or says who holds it and exits _REFUSED.
_TAKE = (
    _DESCRIBE
    + r"""
set -u
umask 077
mkdir -p -- "$1" || exit 1
flock -n -E 75 -- "$1/lock" sh -c "$4" hold "$1" "$2" "$3"
code=$?
if [ "$code" -eq 75 ]; then describe "$1"; fi
exit "$code"
"""
)

# Runs under flock, which holds the lock while this runs ($PPID is the flock process). It closes
# its copy of flock's descriptor (the lowest free one, 3 in an ssh session; 3 to 9 to be sure): the
# flock process alone then holds the lock, so the lock is held exactly while that process lives,
# which is what /proc/locks shows (it hides a lock whose locking process has ended).
_HOLD = r"""
exec 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
set -eu
record="{\"lock_pid\": $PPID, ${3#\{}"
tmp=$(mktemp "$1/holder.XXXXXXXX")
# A record not written (a full disk) leaves no temporary file behind.
printf '%s\n' "$record" > "$tmp" || { rm -f -- "$tmp"; exit 1; }
mv -f -- "$tmp" "$1/holder"
trap 'rm -f -- "$1/holder"' EXIT
echo locked
while beat=$(timeout "$2" head -c 1) && [ "$beat" = . ]; do
  echo .
done
"""

# $1 lock folder: who holds the lock, without taking it (taking it, even for a moment, could refuse
# an operation that starts in that moment).
_LOOK = (
    _DESCRIBE
    + r"""
[ -e "$1/lock" ] || { echo free; exit 0; }
describe "$1"
"""
)


class LockLost(OperationError):
    """The environment's lock on its host was lost while the operation held it."""


# The locks this process holds, by environment: what `checkpoint` asks before a change on a host.
_HELD: dict[str, HostLock] = {}


def checkpoint(environment: str) -> None:
    """Before a change on an environment's host: LockLost when this process took the environment's
    lock and has lost it since (a no-op where it holds none, as in a test of the runtime alone)."""
    lock = _HELD.get(environment)
    if lock is not None:
        lock.check()


def host_answers(environment: str, *, within: float = 2 * HEARTBEAT_S + 1) -> bool | None:
    """After a failure on an environment's host, whether the host still answers: True once a
    heartbeat sent from now on comes back, False when none does within `within` s or the session
    ended (a cut network, a host down); None where this process holds no lock for it. The
    heartbeats are the one signal here that tells a lost host from a command's own failure within
    seconds (a connection attempt waits out its timeout)."""
    lock = _HELD.get(environment)
    return None if lock is None else lock.answers_after(time.monotonic(), within)


def lock_dir(env: Environment) -> PurePosixPath:
    """Where the lock and its holder's record live on the environment's host."""
    assert env.host is not None
    return env.host.root / "state"


def parse_answer(line: str) -> dict[str, Any] | None:
    """The holder named by a `holder <record>` / `unrecorded` / `free` line: its record, a record
    that says the holder has not written one yet, or None when the lock is free."""
    word, _, rest = line.strip().partition(" ")
    if word == "free":
        return None
    if word == "holder":
        try:
            record = json.loads(rest)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            record.pop("lock_pid", None)
            return record
    return {"unrecorded": True}


# How long after sending a heartbeat that the host echoed the holder may count on the lock.
LEASE_S = HOST_RELEASE_S - SAFETY_S


def now() -> tuple[float, float]:
    """This moment on both clocks: monotonic (immune to clock changes) and wall-clock (which, unlike
    the monotonic clock, runs on while the machine sleeps: a suspended laptop)."""
    return time.monotonic(), time.time()


def elapsed(since: tuple[float, float], until: tuple[float, float]) -> float:
    """The time between two moments, the longer by either clock: a lease is never overrun unnoticed,
    whether the machine slept or its clock was set back."""
    return max(until[0] - since[0], until[1] - since[1])


def lease_over(sent: tuple[float, float], at: tuple[float, float]) -> bool:
    """Whether, at `at`, the holder may no longer count on the lock whose last echoed heartbeat was
    sent at `sent`: the host keeps it at least HOST_RELEASE_S after that send, the holder stops
    SAFETY_S before."""
    return elapsed(sent, at) > LEASE_S


class HostLock:
    """The environment's lock on its host: `try_acquire` takes it or names the holder; `lost`
    says whether it is still held; `release` lets it go."""

    def __init__(self, env: Environment, *, redact: Redactor | None = None) -> None:
        self.env = env
        self.host = SshHost.for_environment(env, redact=redact, own_connection=True)
        self.dir = lock_dir(env)
        self._proc: subprocess.Popen[bytes] | None = None
        self._mu = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reset()

    @property
    def where(self) -> str:
        return self.host.where

    def look(self) -> dict[str, Any] | None:
        """Who holds the lock, or None when it is free; bounded by the connect timeout."""
        proc = self.host.run(
            ["sh", "-c", _LOOK, "look", str(self.dir)], timeout=self.host.settings.connect_timeout_s + _ANSWER_S
        )
        return parse_answer(proc.stdout)

    def try_acquire(self, record: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """(True, None) when taken; (False, holder) when another holds it (holder None: it was
        released in that moment, try again). A HostError when the host cannot be asked."""
        self.host.check_setup()
        self._reset()
        started = time.monotonic()
        # Until a heartbeat is echoed, the host's countdown is known to have started no earlier than
        # the session does.
        self._lease_from = now()
        remote = ["sh", "-c", _TAKE, "lock", str(self.dir), str(HOST_RELEASE_S), json.dumps(record), _HOLD]
        self._proc = proc = shell.start(self.host.argv(remote), error=HostSetupError)
        errors = threading.Thread(target=self._read_stderr, args=(proc,), daemon=True, name="lock ssh errors")
        answers = threading.Thread(target=self._read_answers, args=(proc, errors), daemon=True, name="lock answers")
        self._threads = [errors, answers]
        for t in self._threads:
            t.start()
        bound = started + self.host.settings.connect_timeout_s + _ANSWER_S
        first = self._next_line(bound)
        if first == "locked":
            # The first heartbeat's echo, awaited here, makes the lease start from now.
            self._beat(proc)
            if self._next_line(bound) == ".":
                with self._mu:
                    self._echoed()
                    self._holding = True
                self._threads.append(
                    threading.Thread(target=self._heartbeats, args=(proc,), daemon=True, name="lock heartbeats")
                )
                self._threads[-1].start()
                _HELD[self.env.name] = self
                return True, None
        code = self._finish()
        if first is not None and first != "locked" and code == _REFUSED:
            return False, parse_answer(first)
        failure = self._failure(code, "the lock could not be taken")
        if isinstance(failure, RemoteCommandFailed):  # the holder's record not written: a full disk?
            failure = disk_full(self.host, self.dir, "the lock was not taken, nothing was changed") or failure
        raise failure

    def check(self) -> None:
        """Raise LockLost when the lock is no longer held (and end the session, should the host
        still hold it)."""
        reason = self.lost
        if reason is None:
            return
        self.release()
        raise LockLost(
            f"environment {self.env.name} lost its lock on {self.where}: {reason}; stopped before the "
            "next change (another operation may hold the lock now)"
        )

    @property
    def lost(self) -> str | None:
        """Why the lock is no longer held, or None while it is."""
        with self._mu:
            if self._lost is None and self._holding and self._ended is not None:
                self._lost = self._ended
            elif self._lost is None and self._holding and lease_over(self._lease_from, now()):
                self._lost = (
                    f"the host has not answered a heartbeat for {elapsed(self._answered_at, now()):.0f} s "
                    f"(it drops the lock after {HOST_RELEASE_S} s without one)"
                )
            return self._lost

    def answers_after(self, since: float, within: float) -> bool:
        """A heartbeat sent at or after `since` (monotonic) came back within `within` s."""
        deadline = since + within
        while True:
            with self._mu:
                if self._lease_from[0] >= since:
                    return True
                if self._ended is not None or self._lost is not None or not self._holding:
                    return False
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def release(self) -> None:
        if _HELD.get(self.env.name) is self:
            del _HELD[self.env.name]
        with self._mu:
            self._holding = False
        self._finish()

    # -- the session ------------------------------------------------------------------------------

    def _reset(self) -> None:
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._sent: collections.deque[tuple[float, float]] = collections.deque()
        self._stderr = bytearray()
        self._lease_from = self._answered_at = now()
        self._lost: str | None = None
        self._ended: str | None = None  # why the session ended, once it has
        self._holding = False
        self._stop.clear()

    def _finish(self) -> int:
        """End the session: no more heartbeats, stdin closed (the host releases at its end of file)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return 0
        self._stop.set()
        _close(proc.stdin)
        code = shell.end(proc, _END_S)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=_END_S)
        _close(proc.stdout)
        _close(proc.stderr)
        return code

    def _next_line(self, deadline: float) -> str | None:
        try:
            return self._answers.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None

    def _read_answers(self, proc: subprocess.Popen[bytes], errors: threading.Thread) -> None:
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").strip()
                with self._mu:
                    if self._holding and line == ".":
                        self._echoed()
                        continue
                self._answers.put(line)
        except (OSError, ValueError):
            pass
        self._answers.put(None)
        code = shell.end(proc, _END_S)
        errors.join(timeout=_END_S)  # ssh's last words, which say why it ended
        with self._mu:
            # Kept whether or not the lock counts as held yet: a session that ends between the
            # holder's answer and try_acquire's return is lost from the start.
            self._ended = self._failure(code, "the holder on the host ended").reason

    def _read_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        try:
            while chunk := proc.stderr.read(4096):
                with self._mu:
                    self._stderr += chunk[: max(0, _STDERR_KEPT - len(self._stderr))]
        except (OSError, ValueError):
            pass

    def _heartbeats(self, proc: subprocess.Popen[bytes]) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if not self._beat(proc):
                with self._mu:
                    if self._holding and self._lost is None:
                        self._lost = "the session to the host ended (a heartbeat could not be sent)"
                return

    def _beat(self, proc: subprocess.Popen[bytes]) -> bool:
        if proc.stdin is None:
            return False
        with self._mu:
            self._sent.append(now())  # before the write: its echo may come before write() returns
        try:
            proc.stdin.write(b".")
            return True
        except (OSError, ValueError):
            return False

    def _echoed(self) -> None:
        """A heartbeat came back (called with _mu held): the host restarted its countdown after it was sent."""
        self._answered_at = now()
        if self._sent:
            self._lease_from = self._sent.popleft()

    def _failure(self, code: int, what: str) -> HostError:
        stderr = bytes(self._stderr).decode("utf-8", "replace")
        error = classify(stderr, code, self.where, self.host.settings)
        if error is not None:
            return error
        if code < 0:
            return HostUnreachable(self.where, f"{what}: no answer within the connect timeout")
        tail = " | ".join(stderr.strip().splitlines()[-3:]) or "no output on stderr"
        return RemoteCommandFailed(self.where, self.host.redact(f"{what} (exit {code}): {tail}"), code, "")


def _close(stream: Any) -> None:
    if stream is None:
        return
    try:
        stream.close()
    except OSError:
        pass
