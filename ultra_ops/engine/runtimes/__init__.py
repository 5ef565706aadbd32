"""Runtimes: how an environment's services run. One interface, two implementations.

- process: local processes from the config's process table (the embedded default)
- compose: docker compose with -f / -p / --env-file (production)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment

# Under compose, the document's layout: the backend, and the stores it keeps its state in. Stopping the
# environment (for a rollback's database swap, or `ultra-ops stop`) stops the application and
# keeps the stores running: ultra_ops backs up, swaps and restores through them.
DATA_SERVICES = ("postgres", "redis")


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    detail: str = ""  # pid, container state, port
    state: str = ""  # up, exited, restarting ... as the runtime names it ("" where it does not)
    cpu_seconds: float | None = None  # CPU time used so far, where the runtime gives it
    memory_bytes: int | None = None  # resident memory, where the runtime gives it
    # A data store the runtime keeps running while the application is stopped (a compose project's
    # PostgreSQL and Redis: a rollback swaps the database through it). Not "the service running".
    store: bool = False


def application(statuses: list[ServiceStatus]) -> list[ServiceStatus]:
    """The application's services among what a runtime reports: every one but its data stores."""
    return [s for s in statuses if not s.store]


class Runtime(Protocol):
    env: Environment

    def build(self, version: str) -> None: ...

    def push(self, version: str, registry: str) -> None: ...

    def pull(self, version: str) -> None: ...

    def up(self, version: str) -> None:
        """Start every service at `version`, replacing running ones."""

    def down(self) -> None:
        """Stop every service gracefully."""

    def status(self, *, usage: bool = True) -> list[ServiceStatus]:
        """Each service and whether it runs; `usage`: its CPU and memory too, where measuring them
        costs time (docker stats samples): False when only running or not matters."""

    def logs(self, tail: int = 100) -> str: ...

    def wait_healthy(self, timeout_s: float) -> None:
        """Return when every service answers its health URL; raise RuntimeFailure at timeout."""


def get_runtime(
    env: Environment,
    *,
    compose_file: Path | None = None,
    registry: str | None = None,
    log: Log | None = None,
    redact: Redactor | None = None,
) -> Runtime:
    """The runtime the environment's config names; `compose_file` overrides the configured one.

    `registry` (compose only) is where images are pulled from and run as; push names its own.
    """
    log = log or NullLog()
    # Without a redactor the environment's own secrets are still kept out of messages.
    redact = redact or Redactor.for_environment(env)
    if env.runtime == "compose" or compose_file is not None:
        from ultra_ops.engine.runtimes.compose import ComposeRuntime

        return ComposeRuntime(env, compose_file=compose_file, registry=registry, log=log, redact=redact)
    from ultra_ops.engine.runtimes.process import ProcessRuntime

    return ProcessRuntime(env, log=log, redact=redact)
