"""One authenticated SSH connection per environment's host per run: the run's master, every command
to that host a session on it.

Each ssh connection costs a process, a key exchange and a public-key authentication (0.28 s on the
bench's machine); a session on an open connection costs a round trip. A deploy made 26-27
connections (the tunnels, each file copied, each docker and compose command); with a master it
makes one, plus the lock's own (lock.py says why that one stays apart).

- Started by ultra_ops itself, not by ssh's ControlMaster=auto: `ssh -M -N` with every option of
  ssh.py (the host key checked against known_hosts, ConnectTimeout, the keepalives) and
  ControlPersist=no, under shell.py's watchdog. Its process group is killed when this process ends,
  even by SIGKILL, so no master outlives its run, and with it every session on it (the host sees
  the connection end). It counts as up once ssh runs its LocalCommand, which ssh does after its
  socket listens: an event, not a poll of the socket.
- Its socket lives in a folder of the run's own, made by mkdtemp (created with O_EXCL: mode 0700,
  ours, a name no other run has, the run's id in it), checked again before use. No other user can
  reach the socket, and no run uses another's: the socket is found through this process's registry
  (ssh.share), never by a name another run could guess or pre-create. The path stays short (unix
  socket paths are limited to 104 bytes on BSD and macOS, 108 on Linux, and ssh binds a name 17
  bytes longer first, then renames it).
- Commands use it while it is registered (ssh.SshHost.options); where no master is up (a one-off
  probe, `status`) each command connects on its own as before.
- A cut network: the master's keepalives (2 s x 2) end it within about 6 s, and every session on
  it fails at once (ssh exits 255), which SshHost.failure reads as HostUnreachable. A command
  started after that does not quietly open a connection of its own (ssh.py's guard): an operation
  whose host was lost fails fast, and `recover` runs once the host is back, in a run of its own.
- Tunnels are forwards on the master (`-O forward` / `-O cancel`, tunnel.py): no connection each.
- Closed when its run ends (reach.py's Reach, the run's scope for a host): `-O exit`, then its
  group killed, then its folder removed. A folder a killed run left (its socket refusing: no
  master behind it) is removed by the next master made on this machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from ultra_ops.engine import shell
from ultra_ops.engine.hosts.ssh import HostError, HostSetupError, HostUnreachable, SshHost, classify, share, unshare

_READY = b"ultra-ops-master-ready"
# An -O request (forward, cancel, exit) is answered by the master on this machine, in milliseconds.
_CONTROL_S = 5.0
_END_S = 2.0
# The longest socket path allowed: 104 bytes (BSD, macOS) less the 17 of ssh's temporary name.
_SOCKET_PATH_MAX = 86
_PREFIX = "uo-"
_SOCKET = "s"
# An empty run folder this old is a killed run's (a run's master makes its socket within its
# connect timeout of making the folder).
_ABANDONED_S = 600
_UNSAFE = re.compile(r"[%~\s\"']")


class Master:
    """The run's connection to one environment's host: `open`, then every command to the host is a
    session on it until `close`."""

    def __init__(self, host: SshHost, *, run: str = "") -> None:
        self.host = host
        self.run = run
        self.folder: Path | None = None
        self.socket = Path()
        self._proc: subprocess.Popen[bytes] | None = None
        self._errors: IO[bytes] | None = None
        self._ended: str | None = None
        self._mu = threading.Lock()

    @property
    def where(self) -> str:
        return self.host.where

    def argv(self) -> list[str]:
        control = {"ControlMaster": "yes", "ControlPath": str(self.socket), "ControlPersist": "no"}
        return [
            "ssh",
            *self.host.connection_options(control),
            "-N",
            "-o",
            "PermitLocalCommand=yes",
            "-o",
            f"LocalCommand=echo {_READY.decode()}",
            "--",
            self.host.settings.address,
        ]

    def open(self, timeout: float | None = None) -> Master:
        """Connect (the connect timeout plus a few seconds at most) and register the master; a
        HostError, classified as a direct connection's, when it cannot connect."""
        self.host.check_setup()
        limit = timeout if timeout is not None else self.host.settings.connect_timeout_s + 5
        deadline = time.monotonic() + limit
        self.folder = run_folder(self.run)
        self.socket = self.folder / _SOCKET
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 - a file: nobody reads it while ssh runs
        try:
            self._proc = shell.start(self.argv(), die_with_parent=True, stderr=self._errors, error=HostSetupError)
            reason = self._wait_ready(deadline)
        except BaseException:
            self.close()
            raise
        if reason is not None:
            self.close()
            failure = classify(reason, 255, self.where, self.host.settings)
            raise failure or HostError(self.where, self.host.redact(f"the connection could not be opened: {reason}"))
        share(self.host.environment, self.host.settings, self)
        return self

    def _wait_ready(self, deadline: float) -> str | None:
        """None once the master listens on its socket; else what ssh said when it ended."""
        assert self._proc is not None and self._proc.stdout is not None
        out = b""
        while _READY not in out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HostUnreachable(
                    self.where, f"no connection within {self.host.settings.connect_timeout_s:g} s (no answer)"
                )
            ready, _, _ = select.select([self._proc.stdout], [], [], min(left, 0.5))
            chunk = os.read(self._proc.stdout.fileno(), 4096) if ready else b""
            if ready and not chunk:  # ssh ended before it was up
                shell.end(self._proc, _END_S)
                return " | ".join(self._said().strip().splitlines()[-3:]) or "ssh exited"
            out += chunk
        return None

    def ended(self, within: float = 0.0) -> str | None:
        """What ssh said when the master ended (its stderr), or None while it is up; waits up to
        `within` s for it to end (a session that saw it go may see that before it has)."""
        deadline = time.monotonic() + within
        while True:
            with self._mu:
                if self._ended is not None:
                    return self._ended
                proc = self._proc
                if proc is None:
                    return "closed"
                # The watchdog exits a moment after the master, whose socket stops answering at
                # once: either says it has gone.
                if proc.poll() is not None or not _accepts(self.socket):
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=_END_S)  # its last words are written by then
                    self._ended = self._said().strip() or "its ssh process ended without a word (killed)"
                    return self._ended
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def _said(self) -> str:
        """The master's stderr so far. Read at an offset (pread): the master shares the file's
        position, and moving it would make the master's next line overwrite an earlier one."""
        errors = self._errors
        try:
            fd = errors.fileno() if errors is not None else -1
            return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "replace") if fd >= 0 else ""
        except (OSError, ValueError):  # closed meanwhile (the run ending in another thread)
            return ""

    def control(self, *request: str) -> str | None:
        """Ask the master (`forward`, `cancel`, `exit` with their arguments); None when it did,
        else what it said (its reply, and its own lines since the request: a port already taken)."""
        before = len(self._said())
        argv = [
            "ssh",
            *self.host.connection_options({"ControlMaster": "no", "ControlPath": str(self.socket)}),
            "-O",
            *request,
            "--",
            self.host.settings.address,
        ]
        try:
            proc = shell.run(argv, timeout=_CONTROL_S, check=False)
        except shell.CommandFailed as exc:
            return str(exc)
        if proc.returncode == 0:
            return None
        return " | ".join([*proc.stderr.strip().splitlines(), *self._said()[before:].strip().splitlines()])

    def close(self) -> None:
        """Unregister, ask the master to exit, kill its group and remove its folder; twice is fine."""
        unshare(self.host.environment, self.host.settings, self)
        with self._mu:
            proc, self._proc = self._proc, None
            if self._ended is None:
                self._ended = "closed at the end of its run"
        if proc is not None:
            if proc.poll() is None and _accepts(self.socket):
                # The master ends its sessions and says goodbye to the host rather than vanishing;
                # its group is killed right after either way.
                self.control("exit")
            if proc.stdin is not None:
                proc.stdin.close()  # the watchdog kills the group at this end of file
            shell.end(proc, _END_S)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._errors is not None:
            self._errors.close()
            self._errors = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> Master:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _accepts(path: Path) -> bool:
    """Whether a master listens on the socket at `path` (a dead one's socket refuses or is gone)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def runtime_base() -> Path:
    """Where run folders are made: $XDG_RUNTIME_DIR when it is ours and private (0700), else the
    temporary folder (a shared /tmp is fine: mkdtemp makes a folder only we can enter), else /tmp
    when the temporary folder's path is too long for a socket path."""
    uid = os.getuid()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    for candidate in (xdg, tempfile.gettempdir(), "/tmp"):
        if not candidate or len(candidate) + len(f"/{_PREFIX}12345678-12345678/{_SOCKET}") > _SOCKET_PATH_MAX:
            continue
        if _UNSAFE.search(candidate):  # ssh expands % and ~ in ControlPath, and splits it at blanks
            continue
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue
        if candidate == xdg and (st.st_uid != uid or st.st_mode & 0o077):
            continue
        return Path(candidate)
    raise HostSetupError("this machine", "no folder for the SSH connection's socket (XDG_RUNTIME_DIR, TMPDIR, /tmp)")


def run_folder(run: str = "") -> Path:
    """A new folder of this run's own for its master's socket: 0700, ours, named after the run."""
    base = runtime_base()
    sweep(base)
    label = re.sub(r"[^A-Za-z0-9]", "", run)[:8] or f"p{os.getpid()}"
    folder = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{label}-", dir=base))
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) != 0o700:
        raise HostSetupError("this machine", f"the socket folder {folder} is not a private folder of ours")
    return folder


def sweep(base: Path) -> None:
    """Remove the run folders that killed runs of ours left in `base`: a socket no master answers on,
    or an empty folder older than any run's start."""
    try:
        entries = list(base.iterdir())
    except OSError:
        return
    uid = os.getuid()
    for folder in entries:
        if not folder.name.startswith(_PREFIX):
            continue
        try:
            st = os.lstat(folder)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
                continue
            sock = folder / _SOCKET
            if sock.exists() or sock.is_symlink():
                if not _accepts(sock):
                    shutil.rmtree(folder, ignore_errors=True)
            elif not any(folder.iterdir()) and time.time() - st.st_mtime > _ABANDONED_S:
                folder.rmdir()
        except OSError:
            continue
