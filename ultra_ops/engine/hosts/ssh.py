"""Commands on an environment's host, over OpenSSH's own client.

Every connection is made the same way (`options`): never a prompt (BatchMode), host keys only from
the environment's known_hosts and never added to it (an unknown or changed key is refused), the key
from `identity_file` alone when one is configured (else the agent's), a bounded connect, and
keepalives that notice a dead host or a cut network within about 6 s (ServerAliveInterval 2 x
ServerAliveCountMax 2), where TCP alone waits minutes and an open stream never ends.

The remote command is an argument list joined with shlex.join (the remote login shell splits it
back into the same list); never a string built from raw input. A failure is one typed HostError
whose one-line message names the environment and the host and says what went wrong; never key
material (ssh does not print it) and, through the caller's redactor, no secret of the remote
command's output.

Within a run, the commands to a host share one authenticated connection: the run's master
(mux.py), each command a session on it (a round trip instead of a key exchange). `options` names
the master's socket while one is registered here for the environment's host, and otherwise makes
each command connect on its own, as a one-off command (a probe, `status`) does.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ultra_ops.engine import shell
from ultra_ops.engine.errors import CommandFailed, OperationError
from ultra_ops.engine.settings.host import HostSettings
from ultra_ops.engine.settings.table import ENV_VAR_NAME

if TYPE_CHECKING:
    from ultra_ops.engine.secrets import Redactor
    from ultra_ops.engine.settings import Environment

SERVER_ALIVE_INTERVAL_S = 2
SERVER_ALIVE_COUNT_MAX = 2
# ssh exits 255 for its own failures; any other code is the remote command's.
SSH_FAILED = 255


class HostError(OperationError):
    """A command on an environment's host could not be run, or failed there."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


class HostUnreachable(HostError):
    """No answer: timed out, no route, name unknown, or the connection was lost (a cut network)."""


class HostConnectionRefused(HostError):
    """The address answers but nothing listens for ssh on the port (sshd stopped, wrong port)."""


class HostAuthenticationFailed(HostError):
    """The host refused the key (wrong key, not in authorized_keys, no key in the agent)."""


class HostKeyUnknown(HostError):
    """The host's key is not in the environment's known_hosts: refused, never learnt on the fly."""


class HostKeyChanged(HostError):
    """The host offers another key than known_hosts holds: a reinstalled host or someone in between."""


class HostSetupError(HostError):
    """What ssh needs on this machine is missing: the identity file, the ssh client."""


class HostDiskFull(HostError):
    """The host's file system holding an environment's folder has no space left: nothing written."""


class RemoteCommandFailed(HostError):
    """The command ran on the host and exited non-zero."""

    def __init__(self, where: str, reason: str, returncode: int, stderr: str = "") -> None:
        super().__init__(where, reason)
        self.returncode = returncode
        self.stderr = stderr


class HostEngineDown(RemoteCommandFailed):
    """The host answers, but its Docker engine does not (dockerd stopped or restarting)."""


# What the docker and compose clients say when the engine's socket does not answer.
_ENGINE_DOWN = re.compile(
    r"Cannot connect to the Docker daemon|Is the docker daemon running|Couldn't connect to Docker daemon"
)


class RemoteCommandTimeout(HostError):
    """The command did not finish within its time on the host (the ssh client was stopped)."""


# What a session on the run's master (mux.py) prints when the master has gone: its socket refused or
# missing, the master ending mid-request, or the guard below that stops ssh's silent fallback to a
# connection of its own. (A session whose master ends while it runs prints nothing: SshHost.failure
# asks the master then.)
MASTER_GONE_MARK = "ultra-ops: the shared connection to the host has ended"  # no quote: it goes through sh -c
_MASTER_GONE = re.compile(
    re.escape(MASTER_GONE_MARK) + r"|mux_client_|muxclient:|Control socket connect|master hello exchange failed"
)

# The master is up, but sshd refused the session (more sessions than its MaxSessions).
_SESSION_REFUSED = re.compile(r"open failed|refused by peer|administratively prohibited", re.I)

# (class, pattern in ssh's stderr, reason); the first that matches wins, so the changed key comes
# before the generic "Host key verification failed", and a gone master before all (a stale socket's
# "Connection refused" is not the host's).
_FAILURES: tuple[tuple[type[HostError], re.Pattern[str], str], ...] = (
    (
        HostUnreachable,
        _MASTER_GONE,
        "the run's shared connection to it has ended (a cut network or sshd restarted); nothing more was sent",
    ),
    (
        HostKeyChanged,
        re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed", re.I),
        "the host key has CHANGED since it was put in {known_hosts}; refused (a reinstalled host or "
        "someone in between: check the new key's fingerprint with the host's owner before replacing it)",
    ),
    (
        HostKeyUnknown,
        re.compile(r"host key is known for|Host key verification failed", re.I),
        "the host key is not in {known_hosts}; refused (add it after checking its fingerprint)",
    ),
    (
        HostConnectionRefused,
        re.compile(r"Connection refused", re.I),
        "connection refused on port {port} (is sshd running and listening there?)",
    ),
    (
        HostAuthenticationFailed,
        re.compile(r"Permission denied|Too many authentication failures|no mutual signature", re.I),
        "authentication failed: the host refused {key}",
    ),
    (
        HostUnreachable,
        re.compile(r"Timeout, server .* not responding|Broken pipe|Connection (reset|closed)|client_loop", re.I),
        "the connection was lost (no answer to keepalives within {alive_s} s)",
    ),
    (
        HostUnreachable,
        re.compile(
            r"timed out|No route to host|Network is unreachable|Host is unreachable|"
            r"Could not resolve hostname|Name or service not known|kex_exchange_identification",
            re.I,
        ),
        "no answer within {connect_s:g} s (host down, unreachable or a network in between cut)",
    ),
)


def classify(stderr: str, returncode: int, where: str, settings: HostSettings) -> HostError | None:
    """The error ssh's failure stands for; None when ssh itself did not fail (the remote command's
    exit code, or ssh's 255 without a message of ssh's: a remote command may exit 255 too)."""
    if returncode != SSH_FAILED:
        return None
    for kind, pattern, reason in _FAILURES:
        if pattern.search(stderr):
            key = f"the key {settings.identity_file}" if settings.identity_file else "the ssh agent's keys"
            return kind(
                where,
                reason.format(
                    known_hosts=settings.known_hosts,
                    port=settings.port,
                    key=key,
                    alive_s=SERVER_ALIVE_INTERVAL_S * (SERVER_ALIVE_COUNT_MAX + 1),
                    connect_s=settings.connect_timeout_s,
                ),
            )
    return None


# A connection of its own. (A master connection from the operator's ssh_config would bypass the
# options here.)
_OWN_CONNECTION = {"ControlMaster": "no", "ControlPath": "none"}


class SharedConnection(Protocol):
    """The run's master connection to a host, as the commands that share it see it (mux.Master)."""

    socket: Path

    def ended(self, within: float = 0.0) -> str | None:
        """What ssh said when the master ended (its stderr), or None while it is up (waiting up to
        `within` s for it to end)."""
        ...

    def control(self, *request: str) -> str | None:
        """Ask the master (`forward -L SPEC`, `cancel -L SPEC`, `exit`): None when it did, else why not."""
        ...


# The masters open in this process: (environment, host settings) -> its master. Registered by
# mux.Master while it is up; a command built meanwhile for that environment's host is a session on it.
_SHARED: dict[tuple[str, HostSettings], SharedConnection] = {}
_SHARED_MU = threading.Lock()


def share(environment: str, settings: HostSettings, master: SharedConnection) -> None:
    """Make `master` the connection that commands to `environment`'s host use."""
    with _SHARED_MU:
        _SHARED[(environment, settings)] = master


def unshare(environment: str, settings: HostSettings, master: SharedConnection) -> None:
    """Commands to `environment`'s host no longer use `master` (left as is if another has replaced it)."""
    with _SHARED_MU:
        if _SHARED.get((environment, settings)) is master:
            del _SHARED[(environment, settings)]


def shared(environment: str, settings: HostSettings) -> SharedConnection | None:
    with _SHARED_MU:
        return _SHARED.get((environment, settings))


@dataclass(frozen=True)
class Probe:
    """Whether the host answers: over ssh, and its Docker engine."""

    answers: bool
    detail: str  # "Docker 20.10.24 (0.21 s)", or the error's reason
    elapsed_s: float


class SshHost:
    """An environment's host: the ssh argument lists that reach it and the runner that uses them."""

    def __init__(
        self,
        environment: str,
        settings: HostSettings,
        *,
        redact: Redactor | Callable[[str], str] | None = None,
        own_connection: bool = False,
    ) -> None:
        """`own_connection`: every command connects on its own, never as a session on the run's
        master (the lock's session: lock.py says why)."""
        self.environment = environment
        self.settings = settings
        self._redact = redact
        self.own_connection = own_connection

    @classmethod
    def for_environment(
        cls, env: Environment, *, redact: Redactor | Callable[[str], str] | None = None, own_connection: bool = False
    ) -> SshHost:
        if env.host is None:
            raise ValueError(f"environment {env.name} has no host: it runs on this machine")
        return cls(env.name, env.host, redact=redact, own_connection=own_connection)

    @property
    def master(self) -> SharedConnection | None:
        """The run's master that this host's commands are sessions on, if one is up."""
        return None if self.own_connection else shared(self.environment, self.settings)

    @property
    def where(self) -> str:
        return f"{self.environment}'s host {self.settings.describe()}"

    def options(self) -> list[str]:
        """ssh's options for a command to this host: a session on the run's master while one is up
        (mux.py), else a connection of its own."""
        master = self.master
        if master is None:
            control = _OWN_CONNECTION
        else:
            control = {
                "ControlMaster": "no",
                "ControlPath": str(master.socket),
                # ssh falls back to a connection of its own when the master's socket is gone or
                # refuses: a master ended by a cut network would be silently replaced mid-operation
                # (after a 5 s connect timeout, by a connection without the run's scope). This
                # proxy, used only by that fallback, fails it at once with a line classify reads.
                "ProxyCommand": f'sh -c "echo {MASTER_GONE_MARK} >&2; exit 1"',
            }
        return self.connection_options(control)

    def connection_options(self, control: Mapping[str, str]) -> list[str]:
        """What every connection to this host is made with, and `control` (how it uses a master:
        ssh keeps an option's first value, so these come before any other)."""
        s = self.settings
        opts = {
            "BatchMode": "yes",
            "StrictHostKeyChecking": "yes",
            "UserKnownHostsFile": str(s.known_hosts),
            "GlobalKnownHostsFile": "/dev/null",
            "UpdateHostKeys": "no",  # known_hosts is the operator's: never written by ultra_ops
            "CheckHostIP": "no",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "ConnectTimeout": str(max(1, round(s.connect_timeout_s))),
            "ServerAliveInterval": str(SERVER_ALIVE_INTERVAL_S),
            "ServerAliveCountMax": str(SERVER_ALIVE_COUNT_MAX),
            **control,
            # INFO (ssh's default), not ERROR: a lost connection ("Timeout, server ... not
            # responding") is only said at INFO, and without it the failure reads as the command's.
            "LogLevel": "INFO",
        }
        argv: list[str] = []
        for key, value in opts.items():
            argv += ["-o", f"{key}={value}"]
        if s.identity_file is not None:
            argv += ["-o", "IdentitiesOnly=yes", "-i", str(s.identity_file)]
        return [*argv, "-T", "-p", str(s.port), "-l", s.user]

    def prefix(self, extra: Sequence[str] = ()) -> list[str]:
        """`ssh <options> <extra> -- <address>`: what a remote command string is appended to
        (`extra`: options of this connection alone, e.g. a reverse forward; such a command connects
        on its own, as a forward asked by a session on the master would stay on it after the
        session, until the run ends)."""
        if extra:
            return ["ssh", *self.connection_options(_OWN_CONNECTION), *extra, "--", self.settings.address]
        return ["ssh", *self.options(), *extra, "--", self.settings.address]

    @staticmethod
    def remote_command(remote: Sequence[str], remote_env: Mapping[str, str] | None = None) -> str:
        """The one string ssh sends: the argument list joined for the remote shell, `env K=V` first."""
        if not remote:
            raise ValueError("a remote command needs at least one argument")
        pairs = []
        for key, value in (remote_env or {}).items():
            if not ENV_VAR_NAME.fullmatch(key):
                raise ValueError(f"{key!r} is not an environment variable name")
            pairs.append(f"{key}={value}")
        return shlex.join(["env", *pairs, *remote] if pairs else list(remote))

    def argv(
        self, remote: Sequence[str], remote_env: Mapping[str, str] | None = None, *, extra: Sequence[str] = ()
    ) -> list[str]:
        return [*self.prefix(extra), self.remote_command(remote, remote_env)]

    def check_setup(self) -> None:
        """The local files ssh reads: missing ones named now, not as a vague ssh failure."""
        s = self.settings
        if s.identity_file is not None and not s.identity_file.is_file():
            raise HostSetupError(self.where, f"the identity file {s.identity_file} does not exist")
        if not s.known_hosts.is_file():
            raise HostKeyUnknown(
                self.where,
                f"the known_hosts file {s.known_hosts} does not exist; refused (add the host's key to it "
                "after checking its fingerprint)",
            )

    def run(
        self,
        remote: Sequence[str],
        *,
        timeout: float,
        input: str | None = None,
        stdin_path: Path | None = None,
        remote_env: Mapping[str, str] | None = None,
        check: bool = True,
        feed: Sequence[str] | None = None,
        extra: Sequence[str] = (),
        stdout_path: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `remote` on the host; its output, or a HostError. With check=False a remote command's
        non-zero exit is returned, not raised (ssh's own failures are raised either way). `feed`: a
        command here whose output the remote command reads (streamed); `extra`: ssh options of this
        connection alone; `stdout_path`: the remote command's output into that file, byte for byte."""
        self.check_setup()
        argv = self.argv(remote, remote_env, extra=extra)
        try:
            proc = shell.run(
                argv,
                timeout=timeout,
                input=input,
                stdin_path=stdin_path,
                feed=feed,
                stdout_path=stdout_path,
                check=False,
                error=_SshClientFailed,
            )
        except _SshClientFailed as exc:
            if "did not finish" in str(exc):
                raise RemoteCommandTimeout(self.where, f"{remote[0]} did not finish within {timeout:g} s") from None
            if feed is not None and str(exc).startswith(f"{Path(feed[0]).name} exited"):
                # The stream from here broke, not ssh: the command here said why.
                raise HostError(self.where, self.redact(f"{remote[0]} got a broken stream: {exc}")) from None
            raise HostSetupError(self.where, self.redact(str(exc))) from None
        failure = self.failure(proc.stderr, proc.returncode)
        if failure is not None:
            raise failure
        if check and proc.returncode != 0:
            if _ENGINE_DOWN.search(proc.stderr):
                raise HostEngineDown(
                    self.where,
                    f"its Docker engine does not answer ({remote[0]} could not reach it: dockerd stopped or "
                    "restarting)",
                    proc.returncode,
                    self.redact(proc.stderr),
                )
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or "no output on stderr"
            raise RemoteCommandFailed(
                self.where,
                self.redact(f"{remote[0]} exited {proc.returncode}: {tail}"),
                proc.returncode,
                self.redact(proc.stderr),
            )
        return proc

    def failure(self, stderr: str, returncode: int) -> HostError | None:
        """classify() for a command to this host, which may have been a session on the run's master:
        one that exits 255 with nothing of ssh's said, because its master ended while it ran (ssh
        prints nothing then), is the master's failure: HostUnreachable, with the master's own
        reason when it gave one (no answer to its keepalives); else the remote command's 255."""
        failure = classify(stderr, returncode, self.where, self.settings)
        master = self.master
        if master is None or returncode != SSH_FAILED:
            return failure
        gone = _MASTER_GONE.search(stderr) is not None
        if failure is None or gone:
            # A session said the master went (it may still be on its way out: a moment for it), or
            # one ended without a word: the master's end, or else the remote command's own 255.
            said = master.ended(within=1.0 if gone else 0.0)
            if said is None and _SESSION_REFUSED.search(stderr):
                return HostError(
                    self.where,
                    "it refused one more session on the run's shared connection (sshd's MaxSessions, 10 by "
                    "default, is too low for ultra_ops's commands at once: raise it)",
                )
            if said is None:
                return failure
            why = classify(said, SSH_FAILED, self.where, self.settings)
            if isinstance(why, HostUnreachable):
                return HostUnreachable(self.where, f"the run's shared connection to it ended: {why.reason}")
            tail = self.redact(" | ".join(said.strip().splitlines()[-2:])) or "ssh said nothing"
            return HostUnreachable(self.where, f"the run's shared connection to it ended ({tail})")
        return failure

    def probe(self, timeout: float | None = None) -> Probe:
        """Does the host answer, and its Docker engine? Bounded: connect timeout plus a few seconds."""
        started = time.monotonic()
        limit = timeout if timeout is not None else self.settings.connect_timeout_s + 5
        try:
            proc = self.run(["docker", "version", "--format", "{{.Server.Version}}"], timeout=limit, check=False)
        except HostError as exc:
            return Probe(False, exc.reason, time.monotonic() - started)
        elapsed = time.monotonic() - started
        if proc.returncode != 0:
            return Probe(False, f"answers over ssh, but its Docker engine does not ({elapsed:.2f} s)", elapsed)
        return Probe(True, f"Docker {proc.stdout.strip()} ({elapsed:.2f} s)", elapsed)

    def redact(self, text: str) -> str:
        return self._redact(text) if self._redact is not None else text


class _SshClientFailed(CommandFailed):
    """shell.run's own failures around ssh (timeout, client missing), turned into HostErrors."""
