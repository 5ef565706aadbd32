"""Is the failure of a step on a hosted environment its host lost?

A deploy or rollback that fails because its host went out of reach (a cut network, the host down,
its Docker engine stopped) must not try to put the environment back now: every attempt waits out a
timeout and fails the same way, and another run may hold the lock by then. It says what it left and
leaves the rest to `recover`. This module tells such a failure from a step's own.
"""

from __future__ import annotations

from ultra_ops.engine.hosts.lock import LockLost, host_answers
from ultra_ops.engine.hosts.ssh import HostEngineDown, HostError, HostUnreachable, SshHost
from ultra_ops.engine.settings import Environment


def host_lost(env: Environment, exc: BaseException) -> HostError | LockLost | None:
    """The failure of a step on a hosted environment is its host lost (the network cut, the host
    down, the lock gone with it) or its Docker engine down: the error that says so, else None. A
    client's own error (a database connection timing out through a tunnel) comes before the tunnel
    is seen to end, so the lock's heartbeats decide: a host that echoes none within seconds is gone;
    one that does (or where this process holds no lock) is asked once, bounded."""
    if env.host is None or not isinstance(exc, Exception):
        return None
    if isinstance(exc, HostUnreachable | HostEngineDown | LockLost):
        return exc
    host = SshHost.for_environment(env)
    if host_answers(env.name) is False:
        return HostUnreachable(host.where, f"it stopped answering (no heartbeat came back) after: {exc}")
    # The host answers: its engine may not (the stores gone with it fail the step as a database
    # error). One bounded probe tells.
    probe = host.probe()
    if probe.answers:
        return None
    if "Docker engine does not" in probe.detail:
        return HostEngineDown(
            host.where, f"its Docker engine does not answer (dockerd stopped or restarting), after: {exc}", 1
        )
    return HostUnreachable(host.where, f"{probe.detail}, after: {exc}")
