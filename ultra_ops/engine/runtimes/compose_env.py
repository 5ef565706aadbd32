"""What `ultra-ops init` prepares for a compose environment: its own copy of the compose file and
the env file's variables the compose file reads (published ports, database name and user,
generated passwords, the backend's log folder, and the config's `compose_env`), each written only
where it is missing.

The ports come from the config, so the containers publish exactly where ultra_ops looks: the
database port, the Redis URL's port and the first health URL's port.
"""

from __future__ import annotations

import secrets
import shutil
import time
from urllib.parse import urlsplit

from ultra_ops.engine.envfile import read_env_file, update_env_file
from ultra_ops.engine.errors import OperationError
from ultra_ops.engine.paths import REPOSITORY_ROOT
from ultra_ops.engine.runtimes.compose import log_volume
from ultra_ops.engine.settings import Environment

COMPOSE_TEMPLATE = REPOSITORY_ROOT / "deploy" / "ultra-ai.compose.yml"


def compose_variables(env: Environment) -> dict[str, str]:
    """Every variable the compose file needs for this environment, passwords freshly generated."""
    db = env.database
    values = {
        "POSTGRES_USER": db.user,
        "POSTGRES_DB": db.name,
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "ULTRA_POSTGRES_PORT": str(db.port),
    }
    if env.redis is not None:
        values["REDIS_PASSWORD"] = secrets.token_urlsafe(24)
        port = urlsplit(env.redis.url).port
        if port:
            values["ULTRA_REDIS_PORT"] = str(port)
    if env.verify.health_urls:
        port = urlsplit(env.verify.health_urls[0]).port
        if port:
            values["ULTRA_BACKEND_PORT"] = str(port)
    # The log folder ultra_ops rotates and archives, for compose commands an operator runs by hand.
    values["ULTRA_LOG_VOLUME"] = log_volume(env)
    values.update(dict(env.compose_env))
    return values


def prepare_compose_environment(env: Environment) -> list[str]:
    """The compose file's copy and the env file's missing variables; one line per thing done.
    Never prints a password."""
    done = []
    if env.compose_file is not None and not env.compose_file.exists():
        env.compose_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(COMPOSE_TEMPLATE, env.compose_file)
        done.append(f"copied {COMPOSE_TEMPLATE.name} to {env.compose_file}")
    elif env.compose_file is not None and env.compose_file.is_file():
        if "${ULTRA_LOG_VOLUME" not in env.compose_file.read_text(encoding="utf-8", errors="replace"):
            # The environment's own copy is the operator's to change: said, not rewritten.
            done.append(
                f"{env.compose_file} does not mount ULTRA_LOG_VOLUME: the backend's logs stay in a named "
                f"volume that archive-logs does not see (see /app/logs in {COMPOSE_TEMPLATE})"
            )
    present = read_env_file(env.env_file)
    wanted = {k: v for k, v in compose_variables(env).items() if not present.get(k)}
    if wanted:
        update_env_file(env.env_file, wanted)
        done.append(f"set {', '.join(sorted(wanted))} in {env.env_file}")
    return done


def start_stores(env: Environment, timeout_s: float = 120.0) -> list[str]:
    """Start the project's PostgreSQL and Redis containers and wait until the database answers
    on its published port with the env file's password: the environment is then ready for its
    first deploy (which backs the database up before anything else)."""
    import psycopg

    from ultra_ops.engine.runtimes.compose import ComposeRuntime

    services = ComposeRuntime(env).up_stores()
    deadline = time.monotonic() + timeout_s
    db = env.database
    while True:
        try:
            with psycopg.connect(**db.conninfo(db.maintenance_db)):
                break
        except psycopg.Error as exc:
            if time.monotonic() > deadline:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise OperationError(
                    f"{env.name}: PostgreSQL on {db.host}:{db.port} did not answer within {timeout_s:g}s: {first}"
                ) from None
            time.sleep(0.25)
    project = env.compose_project or f"ultra-{env.name}"
    return [f"started {', '.join(services)} of {project}; PostgreSQL answers on {db.port}"]
