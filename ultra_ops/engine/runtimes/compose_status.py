"""The compose project's services as the document looks at them: `docker-compose ps` (which run),
`docker inspect` (state, health, image) and `docker stats --no-stream` (CPU and memory), for
`maintenance status` and `ultra-ops status`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ultra_ops.engine.runtimes import ServiceStatus

# One line per container: its compose service, state, health (empty without a healthcheck), name, image.
_INSPECT_FORMAT = (
    '{{index .Config.Labels "com.docker.compose.service"}}\t{{.State.Status}}\t'
    "{{if .State.Health}}{{.State.Health.Status}}{{end}}\t{{.Name}}\t{{.Config.Image}}"
)


@dataclass(frozen=True)
class Container:
    service: str
    state: str  # running, exited, restarting ... as Docker names it
    health: str  # healthy, unhealthy, starting, or ""
    name: str
    image: str


def inspect_args(ids: list[str]) -> list[str]:
    return ["docker", "inspect", "--format", _INSPECT_FORMAT, *ids]


def stats_args(ids: list[str]) -> list[str]:
    return ["docker", "stats", "--no-stream", "--format", "{{json .}}", *ids]


def parse_inspect(output: str) -> dict[str, Container]:
    containers = {}
    for line in output.splitlines():
        parts = line.split("\t")
        if len(parts) == 5 and parts[0]:
            service, state, health, name, image = parts
            if containers.get(service) is not None and containers[service].state == "running":
                continue  # a stopped one beside it (a restart killed midway) is not what serves
            containers[service] = Container(service, state, health, name.lstrip("/"), image)
    return containers


_SIZE = re.compile(r"([\d.]+)\s*([KMGT]?i?B)", re.I)
_UNITS = {
    "b": 1,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def docker_stats_rows(output: str) -> list[tuple[str, float, float | None]]:
    """docker stats JSON lines: CPUPerc "12.5%", MemUsage "100MiB / 2GiB" (no open file count) as
    (container name, CPU percent, memory bytes)."""
    rows = []
    for line in output.splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        cpu = float(str(row.get("CPUPerc", "0")).rstrip("%") or 0)
        used = _SIZE.match(str(row.get("MemUsage", "")))
        memory = float(used.group(1)) * _UNITS[used.group(2).lower()] if used else None
        rows.append((str(row.get("Name") or row.get("Container")), cpu, memory))
    return rows


def parse_stats(output: str) -> dict[str, tuple[float, int | None]]:
    """Container name -> (CPU percent, memory bytes) from `docker stats` JSON lines."""
    return {name: (cpu, int(memory) if memory is not None else None) for name, cpu, memory in docker_stats_rows(output)}


def describe(
    services: list[str],
    running: set[str],
    containers: dict[str, Container],
    usage: dict[str, tuple[float, int | None]],
    stores: tuple[str, ...] = (),
) -> list[ServiceStatus]:
    statuses = []
    for service in services:
        c = containers.get(service)
        if c is None:
            statuses.append(ServiceStatus(service, False, "no container", "absent", store=service in stores))
            continue
        cpu, memory = usage.get(c.name, (None, None))
        parts = [c.state + (f" ({c.health})" if c.health else ""), c.image]
        if cpu is not None:
            parts.append(f"CPU {cpu:.1f}%")
        statuses.append(
            ServiceStatus(
                service, service in running, ", ".join(parts), c.state, memory_bytes=memory, store=service in stores
            )
        )
    return statuses
