"""Which version an environment runs: the one its env file names.

The env file is deployed state: a deploy writes the version into it before the services start on
it, a backup keeps the file with the database, and a rollback restores both, so the version named
there is the one that belongs to the state in place. The release records tell the history; this
tells what runs now. It lives beside the env file rather than under release/, because the backups
(a safety backup notes the version it saves) need it as much as deploy and rollback do.
"""

from __future__ import annotations

from ultra_ops.engine.envfile import read_env_file, update_env_file
from ultra_ops.engine.settings import Environment
from ultra_ops.engine.versions import VERSION_KEY


def deployed_version(env: Environment) -> str | None:
    """The version the environment's env file says is deployed; None before the first deploy."""
    return read_env_file(env.env_file).get(VERSION_KEY) or None


def mark_deployed(env: Environment, version: str) -> None:
    """Name `version` as the deployed one, before the services start on it."""
    update_env_file(env.env_file, {VERSION_KEY: version})
