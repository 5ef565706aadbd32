"""What a service starts with from the operator's shell: a fixed allowlist of non-secret variables.

A service's environment is its env file (the deployed state, backed up and restored with each
release), the settings ultra_ops decides (port, version, database and Redis) and the secrets its
process table maps explicitly (`secret_env`). From the shell that runs ultra_ops it gets only the
variables below, whatever the environment's config names: a password exported for a smoke test
(`ULTRA_AUTH_PASSWORD`) must not turn on authentication in a service whose env file has none, nor
another environment's key reach it.

- PATH: where its programs are;
- HOME, USER, LOGNAME: who runs it (libraries look under ~ for caches and settings);
- LANG, LANGUAGE, LC_*: the locale (text encoding of its files and output);
- TZ: the time zone of its log lines;
- TMPDIR: where its temporary files go;
- PYTHONPATH, VIRTUAL_ENV: which code a Python service imports (a development checkout runs its own).

Left out on purpose: SSH_AUTH_SOCK (the operator's SSH keys), proxies (their URLs may carry
credentials; a service that needs one says so in its env file), DOCKER_* and git's variables
(for ultra_ops's own commands, shell.BASIC_ENV, not for a service).

`docker compose` itself needs more to find the daemon and its config (DOCKER_*, XDG_RUNTIME_DIR,
HOME): it runs with shell.BASIC_ENV, never the variables the config names (compose's interpolation
prefers them over --env-file), and for a key the env file sets, the env file's value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ultra_ops.engine.shell import BASIC_ENV, BASIC_ENV_PREFIXES

SERVICE_BASE_ENV = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV"}
)
SERVICE_BASE_PREFIXES = ("LC_",)


def service_base_env() -> dict[str, str]:
    """The variables of ours a service process starts from (the allowlist above)."""
    return {k: v for k, v in os.environ.items() if k in SERVICE_BASE_ENV or k.startswith(SERVICE_BASE_PREFIXES)}


def env_file_wins(env_file_values: Mapping[str, str]) -> dict[str, str]:
    """For compose commands (which get shell.BASIC_ENV from us): the env file's value for each basic
    key it also sets, so compose's interpolation reads the env file's, not the operator's."""
    return {k: v for k, v in env_file_values.items() if k in BASIC_ENV or k.startswith(BASIC_ENV_PREFIXES)}
