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

# The compose file's image tag (`ultra-ai/backend:${ULTRA_IMAGE_TAG:-latest}`). ultra_ops passes it to
# every compose command it runs; written beside the version, it makes a bare `docker-compose up -d`
# (the release document's manual rollback) run the deployed release, not `latest`.
IMAGE_TAG_KEY = "ULTRA_IMAGE_TAG"
# The compose file's registry prefix (`${ULTRA_REGISTRY:-}ultra-ai/backend:...`), "" or
# "registry.example.com/": after a `--registry` deploy the image runs by its pushed name, and a
# host that pulled it has no other; a bare `docker-compose up -d` must name it the same way.
REGISTRY_KEY = "ULTRA_REGISTRY"


def deployed_values(env: Environment, version: str, registry_prefix: str = "") -> dict[str, str]:
    """The env file's keys that name the deployed release, for the environment's runtime
    (`registry_prefix`: the image name's prefix it runs with, "" for the local name)."""
    values = {VERSION_KEY: version}
    if env.runtime == "compose":
        values[IMAGE_TAG_KEY] = version
        values[REGISTRY_KEY] = registry_prefix
    return values


def deployed_version(env: Environment) -> str | None:
    """The version the environment's env file says is deployed; None before the first deploy."""
    return read_env_file(env.env_file).get(VERSION_KEY) or None


def mark_deployed(env: Environment, version: str, registry_prefix: str = "") -> None:
    """Name `version` as the deployed one, before the services start on it: every key that names
    it in one atomic rewrite of the env file."""
    update_env_file(env.env_file, deployed_values(env, version, registry_prefix))


def mark_restored(env: Environment) -> None:
    """After a restore put back an env file: its keys agree on the version it names, for a
    backup written before the image tag was kept beside the version."""
    values = read_env_file(env.env_file)
    version = values.get(VERSION_KEY)
    if not version:
        return
    expected = deployed_values(env, version, values.get(REGISTRY_KEY, ""))
    if any(values.get(k) != v for k, v in expected.items()):
        mark_deployed(env, version, values.get(REGISTRY_KEY, ""))
