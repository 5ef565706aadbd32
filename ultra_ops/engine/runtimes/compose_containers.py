"""The containers of a compose project, as docker lists them: which are its services', and which a
restart that was killed midway left beside a service's own (strays). Pure: the runtime runs them."""

from __future__ import annotations

import re

from ultra_ops.engine.runtimes import DATA_SERVICES

_LABEL = "com.docker.compose"


def project_label(project: str) -> str:
    """The project name as compose writes it into its labels (lower case, [-_a-z0-9] only)."""
    return re.sub(r"[^-_a-z0-9]", "", project.lower())


def containers_args(project: str) -> list[str]:
    return [
        "docker",
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        f"label={_LABEL}.project={project_label(project)}",
        "--filter",
        f"label={_LABEL}.oneoff=False",
        "--format",
        '{{.ID}}\t{{.Label "' + _LABEL + '.service"}}\t{{.State}}',
    ]


def parse_containers(output: str) -> list[tuple[str, str, str]]:
    """(id, service, state) of each service container; one-off `run` containers are left out."""
    rows = []
    for line in output.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1]:
            rows.append((parts[0], parts[1], parts[2]))
    return rows


def strays(rows: list[tuple[str, str, str]]) -> list[str]:
    """Of the project's containers (id, service, state; newest first, as docker lists them), those a
    restart killed midway left beside a service's own: never started (`created`) ones, and stopped
    ones beside a running one; never every container of a service (the newest stays)."""
    by_service: dict[str, list[tuple[str, str]]] = {}
    for cid, service, state in rows:
        by_service.setdefault(service, []).append((cid, state))
    found_strays = []
    for service, found in by_service.items():
        if service in DATA_SERVICES or len(found) < 2:
            continue
        running = any(state == "running" for _, state in found)
        extra = [cid for cid, state in found if state == "created" or (running and state == "exited")]
        found_strays += extra[1:] if len(extra) == len(found) else extra
    return found_strays
