"""No two environments on one port: a deploy of one would stop or replace the other's service, and
a verification would pass against the wrong environment's service.

What an environment listens on is known for the process runtime (each process's `port`); under
Compose the published ports live in the env file, so there the loopback URLs its checks call stand
for them. Checked: a process port taken by another environment's process; a loopback URL of one
environment on another's process port; a loopback URL that checks a service (health, endpoints,
smoke, performance, checklist) on the same port as another environment's. LLM provider URLs only
count against process ports: environments may share a local model server they do not run.

An address of this machine that is not loopback (Docker's bridge 172.17.0.1, where compose
environments publish for the platform's run containers) counts as this machine's too: it is found
by binding to it, no lookup and no command.

Loopback is per machine: an environment on a host of its own (`[environments.X.host]`) has that
host's loopback, so two environments on different hosts may use the same ports and project name.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from ultra_ops.engine.errors import ConfigError
from ultra_ops.engine.settings.environment import Environment

_DEFAULT_PORTS = {"http": 80, "https": 443}


def check_ports(path: Path, envs: dict[str, Environment]) -> None:
    """ConfigError naming both environments and keys where two environments share a port."""
    projects: dict[tuple[str, str], str] = {}
    for env in envs.values():
        if env.runtime == "compose" and env.compose_project is not None:
            project = (_machine(env), env.compose_project)
            if project in projects:
                raise ConfigError(
                    path,
                    f"environments.{env.name}.compose_project",
                    f"{env.compose_project!r} is also {projects[project]}'s: one Compose project is "
                    "one set of containers and published ports",
                )
            projects[project] = env.name
    # (machine, port) -> (environment, key) of the process listening there
    owned: dict[tuple[str, int], tuple[str, str]] = {}
    for env in envs.values():
        for key, number in _process_ports(env):
            port = (_machine(env), number)
            if port in owned:
                other, other_key = owned[port]
                whose = "" if other == env.name else f"{other}'s "
                raise ConfigError(
                    path,
                    f"environments.{env.name}.{key}",
                    f"port {number} is also {whose}{other_key}; environments and their processes must not share a port",
                )
            owned[port] = (env.name, key)
    # (machine, port) -> (environment, key) of a service check calling it
    checked: dict[tuple[str, int], tuple[str, str]] = {}
    for env in envs.values():
        for key, number, service in _loopback_urls(env):
            where = f"environments.{env.name}.{key}"
            port = (_machine(env), number)
            other, other_key = owned.get(port, (env.name, ""))
            if other != env.name:
                raise ConfigError(
                    path, where, f"calls port {number}, {other}'s {other_key}; an environment checks its own services"
                )
            other, other_key = checked.get(port, (env.name, "")) if service else (env.name, "")
            if other != env.name:
                raise ConfigError(
                    path,
                    where,
                    f"calls port {number}, as {other}'s {other_key} does; environments must not share a port",
                )
            if service:
                checked.setdefault(port, (env.name, key))


def _machine(env: Environment) -> str:
    """Whose loopback the environment's addresses name: its host's, or this machine's ("")."""
    return f"{env.host.address}:{env.host.port}" if env.host is not None else ""


def _process_ports(env: Environment) -> Iterator[tuple[str, int]]:
    for spec in env.processes:
        if spec.port is not None:
            yield f"processes.{spec.name}.port", spec.port


def _loopback_urls(env: Environment) -> Iterator[tuple[str, int, bool]]:
    """(key, port, checks a service of the environment) of each URL of `env` on this machine."""
    urls: list[tuple[str, str | None, bool]] = [
        (f"processes.{s.name}.health_url", s.health_url, True) for s in env.processes
    ]
    v = env.verify
    urls += [(f"verify.health_urls[{i}]", u, True) for i, u in enumerate(v.health_urls)]
    urls += [(f"verify.endpoints[{i}].url", e.url, True) for i, e in enumerate(v.endpoints)]
    urls += [(f"verify.smoke.{s.name}.base_url", s.base_url, True) for s in v.smoke]
    if v.performance is not None:
        urls += [(f"verify.performance.endpoints[{i}].url", e.url, True) for i, e in enumerate(v.performance.endpoints)]
    c = env.checklist
    for name in ("metrics_url", "protected_url", "login_url", "rate_limit_url"):
        urls.append((f"checklist.{name}", getattr(c, name), True))
    for i, p in enumerate(env.llm_providers):
        urls += [(f"llm_providers[{i}].models_url", p.models_url, False)]
        urls += [(f"llm_providers[{i}].completion_url", p.completion_url, False)]
    for key, url, service in urls:
        port = _loopback_port(url) if url else None
        if port is not None:
            yield key, port, service


def _loopback_port(url: str) -> int | None:
    """The port `url` calls on this machine; None for another host or a URL without a usable port."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return port
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a host name: another machine (no lookup here)
    return port if address.is_loopback or address.is_unspecified or _is_mine(str(address)) else None


@functools.cache
def _is_mine(address: str) -> bool:
    """Whether `address` is one of this machine's own: only those can be bound to."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True
