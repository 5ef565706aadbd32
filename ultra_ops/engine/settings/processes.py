"""The process runtime's services: `[environments.X.processes.<name>]`, one local process each.

[environments.development.processes.backend]
command = ["{python}", "-m", "ultra_ops.sample_service"]
port = 8000
health_url = "http://127.0.0.1:8000/health"
env = { ULTRA_UPLOAD_DIR = "uploads" }
secret_env = { ULTRA_AUTH_PASSWORD = "OUR_VARIABLE" }   # its variable -> the one of ours holding the value
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ultra_ops.engine.settings.table import ENV_VAR_NAME, TableReader, expand_command

_PROCESS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class ProcessSpec:
    """One local process of the process runtime (a Procfile line with a health URL)."""

    name: str
    command: tuple[str, ...]
    port: int | None = None
    health_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    stop_timeout_s: float = 10.0
    # The process's variable -> the variable of ours that holds its secret value (a password).
    secret_env: dict[str, str] = field(default_factory=dict)


def read_processes(r: TableReader | None) -> tuple[ProcessSpec, ...]:
    if r is None:
        return ()
    specs = []
    for name in r.table:
        if not _PROCESS_NAME.fullmatch(name):
            # The name becomes file names (<name>.pid, <name>.out): one plain path component.
            raise r.fail(name, "is not a valid process name (letters, digits, '_' and '-', at most 64)")
        p = r.sub(name)
        assert p is not None
        command = p.string_list("command")
        if not command:
            raise p.fail("command", "must name a program and its arguments")
        port = p.port("port", None)
        env = p.get("env", dict, {})
        for k, v in env.items():
            if not ENV_VAR_NAME.fullmatch(k):
                raise p.fail(f"env.{k}", "is not a valid environment variable name")
            if not isinstance(v, str):
                raise p.fail(f"env.{k}", "expected a string")
        secret_env = p.get("secret_env", dict, {})
        for k, v in secret_env.items():
            if not ENV_VAR_NAME.fullmatch(k):
                raise p.fail(f"secret_env.{k}", "is not a valid environment variable name")
            if not isinstance(v, str) or not ENV_VAR_NAME.fullmatch(v):
                raise p.fail(f"secret_env.{k}", "must name the environment variable that holds the value")
        specs.append(
            ProcessSpec(
                name=name,
                command=expand_command(command),
                port=port,
                health_url=p.url("health_url", required=False),
                env=dict(env),
                stop_timeout_s=float(p.positive("stop_timeout_s", 10.0, at_most=600, unit=" seconds")),
                secret_env=dict(secret_env),
            )
        )
        p.finish()
    return tuple(specs)
