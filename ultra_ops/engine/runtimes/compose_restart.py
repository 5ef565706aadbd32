"""A compose restart onto another release whose containers are made before anything stops.

A rollback stops the application, swaps the database and starts the restored release. Done with
`docker-compose stop` then `docker-compose up -d`, the second compose process runs while the
service is down: compose 1.29 is a Python program whose start-up (about 0.85 s here, more under
load) and reading of the project come before it creates and starts anything. So the successors are
created first, by compose and while the old containers serve (`up --no-start --no-recreate --scale
S=n+1`: compose's own names, labels and config hash, so the project stays a compose project and a
later `up -d` finds them up to date); the downtime is then `docker stop` of the old containers, the
swap, and `docker start` of the new ones, which is the container's own start. The old containers
are removed once the new ones answer.

What the successors were made from (env file and compose file, the version) is kept: a swap that
restored different files (another password, another compose file) makes them wrong, and the start
then goes through `docker-compose up -d` as before (`matches`).

Compose numbers a successor after the container it replaces (backend_2, then backend_3 ...), as
`--scale` does; compose 1.29's `exec` and `port` pick container 1 unless given `--index`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ultra_ops.engine.crash_points import crash_point
from ultra_ops.engine.deployed import IMAGE_TAG_KEY, REGISTRY_KEY
from ultra_ops.engine.envfile import read_env_file
from ultra_ops.engine.errors import RuntimeFailure, UltraOpsError
from ultra_ops.engine.runtimes import DATA_SERVICES
from ultra_ops.engine.versions import VERSION_KEY

if TYPE_CHECKING:
    from ultra_ops.engine.runtimes.compose import ComposeRuntime

_STOP_TIMEOUT_S = 600.0  # docker stop's own grace period is 10 s; this bounds the command
# The compose file may name the env file's version in its interpolation; only then does the
# version line the swap rewrites change what compose would create.
_NAMES_VERSION = re.compile(r"\$\{?" + re.escape(VERSION_KEY) + r"\b")


@dataclass(frozen=True)
class PreparedStart:
    """Successor containers made beside the running ones: per service, the containers to stop and
    the one to start."""

    version: str
    old: dict[str, list[str]] = field(default_factory=dict)
    new: dict[str, str] = field(default_factory=dict)
    env_values: dict[str, str] = field(default_factory=dict, repr=False)  # env file at creation (secrets)
    compose_text: str = field(default="", repr=False)


def create_args(runtime: ComposeRuntime, scale: dict[str, int]) -> list[str]:
    flags = [f for service, n in scale.items() for f in ("--scale", f"{service}={n}")]
    return [*runtime.compose_base(), "up", "--no-deps", "--no-start", "--no-recreate", *flags, *scale]


def prepare_start(runtime: ComposeRuntime, version: str) -> PreparedStart:
    """Create the application's containers at `version` beside the running ones (which keep
    serving). RuntimeFailure when compose fails or does not make exactly one per service; then
    nothing it made is left."""
    services = [s for s in runtime._run(runtime.services_args()).split() if s not in DATA_SERVICES]
    runtime.remove_strays()
    old: dict[str, list[str]] = {s: [] for s in services}
    for cid, service, _ in runtime.containers():
        if service in old:
            old[service].append(cid)
    env_values = read_env_file(runtime.env.env_file)
    compose_text = runtime.compose_file.read_text()
    # On a host, the release's images first, as up() does: compose would otherwise build a missing one
    # there, from a source the host does not have (a no-op where it has them).
    runtime.deliver(version)
    runtime.log.info(f"compose create {runtime.project} at {version}: {', '.join(services)}")
    made: dict[str, list[str]] = {}
    try:
        runtime._run(create_args(runtime, {s: len(old[s]) + 1 for s in services}), version=version)
    finally:
        for cid, service, _ in runtime.containers():
            if service in old and cid not in old[service]:
                made.setdefault(service, []).append(cid)
        if sorted(made) != sorted(services) or any(len(ids) != 1 for ids in made.values()):
            ids = [cid for found in made.values() for cid in found]
            if ids:
                runtime.docker(["docker", "rm", "-f", *ids], changes=True)
            made = {}
    if not made and services:
        raise RuntimeFailure(f"compose create {runtime.project}: not one new container per service; none kept")
    for service in made:
        crash_point(f"created:{service}")  # tests: killed with the successor made and the old one serving
    return PreparedStart(version, old, {s: ids[0] for s, ids in made.items()}, env_values, compose_text)


def stop_old(runtime: ComposeRuntime, prepared: PreparedStart) -> None:
    """Stop the containers the prepared ones replace (gracefully, as compose stop does)."""
    for service, ids in prepared.old.items():
        if ids:
            runtime.log.info(f"docker stop {runtime.project} {service}")
            runtime.docker(["docker", "stop", *ids], timeout=_STOP_TIMEOUT_S, changes=True)
        crash_point(f"stopped:{service}")  # tests: killed with the environment half stopped


def matches(runtime: ComposeRuntime, prepared: PreparedStart, version: str) -> bool:
    """Whether the prepared containers are what `up -d` at `version` would make now (same_inputs)."""
    try:
        return same_inputs(prepared, version, runtime.compose_file.read_text(), read_env_file(runtime.env.env_file))
    except (OSError, UltraOpsError):
        return False


def same_inputs(prepared: PreparedStart, version: str, compose_text: str, env_values: dict[str, str]) -> bool:
    """Same version, same compose file, same env file (its version line aside, unless the compose
    file reads it: the swap rewrites that line)."""
    if version != prepared.version or compose_text != prepared.compose_text:
        return False
    if _NAMES_VERSION.search(compose_text):
        return env_values == prepared.env_values
    return _without_version(env_values) == _without_version(prepared.env_values)


def start_new(runtime: ComposeRuntime, prepared: PreparedStart) -> None:
    """Start the prepared containers. RuntimeFailure when one does not start (the old ones are
    still there, stopped)."""
    for service, cid in prepared.new.items():
        runtime.log.info(f"docker start {runtime.project} {service} at {prepared.version}")
        runtime.docker(["docker", "start", cid], changes=True)
        crash_point(f"started:{service}")  # tests: interrupted with the environment half started
    runtime._version = prepared.version


def remove_old(runtime: ComposeRuntime, prepared: PreparedStart) -> None:
    """Remove the containers the started ones replaced; after the health wait, so that it does not
    compete with the new ones' start. What fails here is left to the next restart or `up`."""
    old = [cid for ids in prepared.old.values() for cid in ids]
    if not old:
        return
    try:
        runtime.docker(["docker", "rm", *old], changes=True)
    except RuntimeFailure as exc:
        runtime.log.warning(f"could not remove the replaced containers of {runtime.project}: {exc}")


def discard(runtime: ComposeRuntime, prepared: PreparedStart) -> None:
    """Remove the prepared containers (not started): the restart goes another way. Best effort:
    what stays is removed by the next restart or `up` (remove_strays)."""
    ids = list(prepared.new.values())
    if not ids:
        return
    try:
        runtime.docker(["docker", "rm", "-f", *ids], changes=True)
    except RuntimeFailure as exc:
        runtime.log.warning(f"could not remove the prepared containers of {runtime.project}: {exc}")


def _without_version(values: dict[str, str]) -> dict[str, str]:
    # The image tag and registry lines too: ultra_ops's own compose commands set both, over the env file's.
    return {k: v for k, v in values.items() if k not in (VERSION_KEY, IMAGE_TAG_KEY, REGISTRY_KEY)}
