"""An SSH tunnel that ultra_ops opens and closes itself: a port on this machine's loopback that
reaches a port on (or behind) the environment's host, for a database or Redis the host does not
publish.

`ssh -N -L 127.0.0.1:<local>:<target>:<port>` with the connection options of every ssh to the host
(ssh.py: host key checked, keepalives, so a cut network ends the tunnel within about 6 s) and
ExitOnForwardFailure. It is open when ssh has set the forward up: ssh runs a LocalCommand then,
which says so on its stdout; nothing connects to the target to find out. The ssh process runs under
shell.py's watchdog, so it dies with ultra_ops, even by SIGKILL, and never holds the port after.

While the run's master is up (mux.py), the tunnel is a forward on it instead (`ssh -O forward`,
closed by `-O cancel`): no connection of its own. The master then holds the port, and it too runs
under the watchdog and ends with a cut network, so the same holds: the port is free after close,
after ultra_ops dies, and once the connection is lost (which `alive` then says).
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import tempfile
import time
from types import TracebackType

from ultra_ops.engine import shell
from ultra_ops.engine.hosts.ssh import HostError, HostSetupError, HostUnreachable, SharedConnection, SshHost

_READY = b"ultra-ops-tunnel-ready"
_ATTEMPTS = 5  # a local port taken between choosing and binding it: another one
_FREE_S = 2.0  # how long a closed tunnel's killed ssh may take to free its port


class Tunnel:
    """127.0.0.1:local_port -> target_host:target_port as seen from the environment's host."""

    def __init__(self, host: SshHost, target_port: int, *, target_host: str = "127.0.0.1") -> None:
        self.host = host
        self.target = (target_host, target_port)
        self.local_port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        # While a forward on the run's master: the master and the forward's `-L` spec.
        self._master: SharedConnection | None = None
        self._spec: str | None = None

    def spec(self, local_port: int) -> str:
        target_host, target_port = self.target
        return f"127.0.0.1:{local_port}:{target_host}:{target_port}"

    def argv(self, local_port: int) -> list[str]:
        return [
            "ssh",
            *self.host.options(),
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            "PermitLocalCommand=yes",
            "-o",
            f"LocalCommand=echo {_READY.decode()}",
            "-L",
            self.spec(local_port),
            "--",
            self.host.settings.address,
        ]

    def open(self, timeout: float | None = None) -> Tunnel:
        """Open the tunnel (connect timeout plus a few seconds at most); a HostError if it cannot."""
        self.host.check_setup()
        limit = timeout if timeout is not None else self.host.settings.connect_timeout_s + 5
        deadline = time.monotonic() + limit
        master = self.host.master
        for _ in range(_ATTEMPTS):
            port = _free_port()
            reason = self._start(port, deadline) if master is None else self._forward(master, port)
            if reason is None:
                self.local_port = port
                return self
            if "Address already in use" not in reason:
                break
        failure = self.host.failure(reason, 255)
        if failure is not None:
            raise failure
        raise HostError(self.host.where, self.host.redact(f"the tunnel to port {self.target[1]} failed: {reason}"))

    def _forward(self, master: SharedConnection, port: int) -> str | None:
        """None when the master forwards the port; else what it said."""
        spec = self.spec(port)
        reason = master.control("forward", "-L", spec)
        if reason is None:
            self._master, self._spec = master, spec
        return reason

    def _start(self, port: int, deadline: float) -> str | None:
        """None when the forward is up; else what ssh said (its stderr's tail)."""
        errors = tempfile.TemporaryFile()  # a file, not a pipe: a long-lived ssh never blocks on it
        try:
            self._proc = shell.start(self.argv(port), die_with_parent=True, stderr=errors, error=HostSetupError)
        except BaseException:
            errors.close()
            raise
        assert self._proc.stdout is not None
        out = b""
        while _READY not in out:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise HostUnreachable(self.host.where, f"the tunnel to port {self.target[1]} did not open in time")
            ready, _, _ = select.select([self._proc.stdout], [], [], min(left, 0.5))
            chunk = os.read(self._proc.stdout.fileno(), 4096) if ready else b""
            if ready and not chunk:  # ssh ended before the forward was up
                self.close()
                errors.seek(0)
                tail = errors.read().decode("utf-8", "replace").strip().splitlines()[-3:]
                errors.close()
                return " | ".join(tail) or "ssh exited"
            out += chunk
        errors.close()  # ssh keeps its own descriptor of the (unlinked) file
        return None

    def alive(self) -> bool:
        if self._master is not None:
            return self._spec is not None and self._master.ended() is None
        return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        """Stop ssh (its whole group), or cancel the forward on the master, and free the port;
        closing twice is fine."""
        master, spec, self._master, self._spec = self._master, self._spec, None, None
        if master is not None and spec is not None and master.ended() is None:
            master.control("cancel", "-L", spec)  # a master gone has freed the port already
        proc, self._proc = self._proc, None
        if proc is not None:
            # Killed at once, not asked; then until its port is free (a busy machine can take a
            # moment to end a killed ssh, which this process cannot wait for: the watchdog's child).
            shell.end(proc, 0)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
            if self.local_port is not None:
                _wait_free(self.local_port, _FREE_S)

    def __enter__(self) -> Tunnel:
        return self if self.alive() else self.open()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _wait_free(port: int, within: float) -> bool:
    """Until nothing listens on 127.0.0.1:`port` (binding it, not connecting: nothing reaches the
    other end), at most `within` s; whether it is free."""
    deadline = time.monotonic() + within
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a connection in TIME_WAIT is no listener
            try:
                s.bind(("127.0.0.1", port))
                return True
            except OSError:
                pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
