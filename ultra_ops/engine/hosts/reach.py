"""Reaching an environment as configured: its database, Redis and HTTP addresses, from this machine.

An environment without a host is reached at its addresses as written. With a host
(`[environments.X.host]`), an address that names loopback (127.0.0.1, localhost, ::1) means the
HOST's loopback, where the compose file publishes PostgreSQL and Redis (and often the backend):
each such port is reached through an SSH tunnel ultra_ops opens itself (tunnel.py), and the
Environment handed to the engine has those addresses rewritten to the tunnels' local ports. Any
other address (the host's own name, a published port, a managed database) is reached directly.

`Reach` is the scope of one environment's host for one run (or one command): it opens the run's
connection to the host (mux.py's master: every command to the host is a session on it while the
reach is open) and the tunnels (forwards on that master), once, and closes them after. A tunnel
that ends while in use (a cut network: the master's keepalives end it within about 6 s) makes the
next client see a refused or closed connection; `failures()` turns what fails then into
HostUnreachable naming the host and the tunnel, and `check()` refuses to start a step on a dead one
(or once the run's connection has ended).
Passwords never go near ssh: the tunnel forwards ports, the clients authenticate through it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from ultra_ops.engine.errors import UltraOpsError
from ultra_ops.engine.hosts.mux import Master
from ultra_ops.engine.hosts.names import LOCAL
from ultra_ops.engine.hosts.ssh import HostError, HostUnreachable, SshHost
from ultra_ops.engine.hosts.tunnel import Tunnel
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment

_DEFAULT_PORTS = {"http": 80, "https": 443, "redis": 6379, "rediss": 6379}


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: on a hosted environment, the host's own loopback."""
    name = address.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _url_port(url: str) -> int | None:
    """The loopback port a URL names (its scheme's default when none is written), else None."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname is None or not is_loopback(parts.hostname):
        return None
    try:
        return parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None


def _rewrite_url(url: str, ports: dict[int, int]) -> str:
    port = _url_port(url)
    if port is None or port not in ports:
        return url
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{LOCAL}:{ports[port]}"))


def _is_url_field(name: str) -> bool:
    return name == "url" or name.endswith("_url")


def _walk_urls(value: Any, visit: Callable[[str], str]) -> Any:
    """`value` with `visit` applied to every URL it holds: fields named url, *_url (strings) and
    *_urls (tuples of strings), in dataclasses and tuples of them, at any depth."""
    if isinstance(value, tuple):
        return tuple(_walk_urls(v, visit) for v in value)
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return value
    changes = {}
    for f in dataclasses.fields(value):
        current = getattr(value, f.name)
        if isinstance(current, str) and _is_url_field(f.name):
            new: Any = visit(current)
        elif f.name.endswith("_urls") and isinstance(current, tuple):
            new = tuple(visit(u) if isinstance(u, str) else u for u in current)
        elif dataclasses.is_dataclass(current) or isinstance(current, tuple):
            new = _walk_urls(current, visit)
        else:
            continue
        if new != current:
            changes[f.name] = new
    return dataclasses.replace(value, **changes) if changes else value


def loopback_ports(env: Environment) -> dict[int, str]:
    """The ports on the host's loopback the environment's config names: port -> what names it
    first ("database", "redis", or a URL), in the config's order."""
    ports: dict[int, str] = {}
    if is_loopback(env.database.host):
        ports.setdefault(env.database.port, "database")

    def note(url: str) -> str:
        port = _url_port(url)
        if port is not None:
            ports.setdefault(port, "redis" if url.startswith(("redis://", "rediss://")) else url)
        return url

    _walk_urls(env, note)
    return ports


def rewritten(env: Environment, ports: dict[int, int]) -> Environment:
    """`env` with every loopback address it names moved to this machine's end of its tunnel
    (`ports`: host port -> local port), and `reached_from` saying which address each local port
    stands for, so that an HTTP client keeps the configured name for TLS (names.py). Where
    URLs name one port by two names (localhost and 127.0.0.1), the first in the config's order."""
    configured: dict[int, str] = {}

    def visit(url: str) -> str:
        new = _rewrite_url(url, ports)
        if new != url:
            netloc = urllib.parse.urlsplit(url).netloc.rpartition("@")[2]  # never a URL's credentials
            configured.setdefault(int(urllib.parse.urlsplit(new).port or 0), netloc)
        return new

    reached = _walk_urls(env, visit)
    db = env.database
    if is_loopback(db.host) and db.port in ports:
        reached = dataclasses.replace(reached, database=dataclasses.replace(db, host=LOCAL, port=ports[db.port]))
    return dataclasses.replace(reached, reached_from=tuple(sorted(configured.items())))


class Reach:
    """One environment's tunnels for one run: `environment` is the Environment to run with."""

    def __init__(
        self, env: Environment, *, redact: Redactor | None = None, log: Log | None = None, run: str = ""
    ) -> None:
        """`run`: the run's id, named in its master's socket folder."""
        self.configured = env
        self.redact = redact or Redactor.for_environment(env)
        self.log = log or NullLog()
        self.run = run
        self.host = SshHost.for_environment(env, redact=self.redact) if env.host is not None else None
        self.master: Master | None = None
        self.tunnels: dict[int, Tunnel] = {}  # host port -> its tunnel
        self._named = loopback_ports(env) if env.host is not None else {}
        self._environment: Environment | None = None if env.host is not None else env

    @property
    def environment(self) -> Environment:
        """The environment as this machine reaches it (opening the tunnels on first use)."""
        if self._environment is None:
            self.open()
        assert self._environment is not None
        return self._environment

    def open(self) -> Reach:
        """Open a tunnel to each loopback port the config names, together; a HostError if any
        cannot be opened (those that did are closed again)."""
        if self._environment is not None:
            return self
        assert self.host is not None
        if self.master is None:
            # First: the tunnels below are forwards on it, and every command after a session on it.
            self.master = Master(self.host, run=self.run).open()
        tunnels = {port: Tunnel(self.host, port) for port in self._named}
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=max(1, len(tunnels))) as pool:
            for future in [pool.submit(t.open) for t in tunnels.values()]:
                try:
                    future.result()
                except BaseException as exc:  # noqa: BLE001 - every tunnel is closed below, then the first raised
                    errors.append(exc)
        if errors:
            for t in tunnels.values():
                t.close()
            self._close_master()
            raise errors[0]
        self.tunnels = tunnels
        local = {port: t.local_port for port, t in tunnels.items() if t.local_port is not None}
        self._environment = rewritten(self.configured, local)
        if tunnels:
            shown = ", ".join(f"{port} ({self._named[port]})" for port in tunnels)
            self.log.info(f"{self.host.where}: tunnels open to its loopback ports {shown}")
        return self

    def dead(self) -> list[int]:
        """Host ports whose tunnel has ended (ssh exited: a cut network, a restarted sshd)."""
        return [port for port, t in self.tunnels.items() if not t.alive()]

    def master_lost(self) -> str | None:
        """Why the run's connection to the host ended while the reach is open, or None."""
        if self.master is None or self._environment is None:
            return None
        said = self.master.ended()
        if said is None:
            return None
        error = self.host.failure(said, 255) if self.host is not None else None
        return error.reason if error is not None else said

    def lost(self, failed: BaseException | None = None) -> HostUnreachable | None:
        """The error a dead tunnel stands for, or None while all are open. `failed`: the error it
        stands in for; an error of ultra_ops's own keeps its message after the cause (what the
        operation left, what to run), a client's bare error does not."""
        dead = self.dead()
        if self.host is None:
            return None
        # On one line: a database client's message spans several.
        then = f"; then: {' '.join(str(failed).split())}" if isinstance(failed, UltraOpsError) else ""
        if not dead:
            # No tunnel to lose, but the run's connection itself ended: every command fails on it.
            gone = self.master_lost()
            if gone is None:
                return None
            return HostUnreachable(self.host.where, f"{gone}{then}")
        shown = ", ".join(f"{port} ({self._named[port]})" for port in dead)
        return HostUnreachable(
            self.host.where,
            f"the SSH tunnel to its port {shown} closed: the connection to the host was lost (a cut network, "
            f"sshd restarted); nothing more was sent to it{then}",
        )

    def check(self) -> None:
        """Raise HostUnreachable if a tunnel has ended."""
        error = self.lost()
        if error is not None:
            raise error

    @contextmanager
    def failures(self) -> Iterator[None]:
        """What fails while a tunnel has ended fails as HostUnreachable (the client's own error,
        a refused or closed connection on this machine's loopback, would hide the cause)."""
        self.check()
        try:
            yield
        except HostError:
            raise
        except BaseException as exc:
            error = self.lost(exc)
            if error is None or not isinstance(exc, Exception):
                raise
            raise error from exc

    def close(self) -> None:
        """Close every tunnel (their ssh processes end, the local ports are free); twice is fine."""
        tunnels, self.tunnels = self.tunnels, {}
        for t in tunnels.values():
            t.close()
        self._close_master()
        if self.configured.host is not None:
            self._environment = None

    def _close_master(self) -> None:
        master, self.master = self.master, None
        if master is not None:
            master.close()

    def __enter__(self) -> Environment:
        try:
            return self.environment
        except BaseException:
            self.close()
            raise

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if value is not None and isinstance(value, Exception) and not isinstance(value, HostError):
                error = self.lost(value)
                if error is not None:
                    raise error from value
        finally:
            self.close()


@contextmanager
def reach(env: Environment, *, redact: Redactor | None = None, log: Log | None = None) -> Iterator[Environment]:
    """`with reach(env) as env:` the environment as this machine reaches it, its tunnels closed after."""
    with Reach(env, redact=redact, log=log) as reached:
        yield reached


class Reaches:
    """The reaches of one run, one per environment, opened on first use and closed together."""

    def __init__(self, run: str = "") -> None:
        self.run = run  # the run's id, named in its masters' socket folders
        self._by_name: dict[str, Reach] = {}

    def get(self, env: Environment, *, redact: Redactor | None = None, log: Log | None = None) -> Reach:
        current = self._by_name.get(env.name)
        if current is None or current.configured != env:
            if current is not None:
                current.close()
            current = self._by_name[env.name] = Reach(env, redact=redact, log=log, run=self.run)
        return current

    def close(self) -> None:
        reaches, self._by_name = list(self._by_name.values()), {}
        for r in reaches:
            r.close()
