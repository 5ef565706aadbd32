"""First-time setup of an environment: its folders, env file and database."""

from __future__ import annotations

import secrets
import stat

from ultra_ops.engine.envfile import read_env_file, update_env_file
from ultra_ops.engine.errors import OperationError
from ultra_ops.engine.files import PRIVATE_DIR_MODE, narrow, private_dir
from ultra_ops.engine.settings import Environment
from ultra_ops.engine.versions import VERSION_KEY


def init_environment(env: Environment, *, reached: Environment | None = None) -> list[str]:
    """Create what is missing and leave what exists alone; return one line per thing done.
    `reached`: the environment as this machine reaches it (a hosted one's addresses through its
    tunnels, engine/hosts/reach.py), for the database; the env file's published ports come from
    `env`, the config as written."""
    import psycopg
    from psycopg import sql

    done = []
    # An env file that is not one (a folder, a FIFO, a bad line) is refused before anything is made.
    read_env_file(env.env_file)
    private_dir(env.root)  # created 0700 if missing; an existing root may be shared, so left alone
    # The environment's own folders hold backups (its database and env file), logs and state.
    for folder in (env.backups_path, env.log_dir, env.state_dir):
        private_dir(folder)
        old = narrow(folder, PRIVATE_DIR_MODE)
        if old is not None:
            done.append(f"narrowed {folder} from {old:04o} to {PRIVATE_DIR_MODE:04o}")
    if not env.env_file.exists():
        update_env_file(env.env_file, {"ULTRA_ENVIRONMENT": env.name})
        done.append(f"created {env.env_file} (mode 0600)")
    else:
        mode = stat.S_IMODE(env.env_file.stat().st_mode)
        if mode & 0o077:
            env.env_file.chmod(0o600)
            done.append(f"narrowed {env.env_file} from {mode:04o} to 0600")
    # What the pre-release checklist tests on the running service: a login (a password made here,
    # kept in the env file only) and a rate limit its burst of requests meets.
    present = read_env_file(env.env_file)
    wanted = {}
    if env.checklist.protected_url and not present.get(env.checklist.auth_password_key):
        wanted[env.checklist.auth_password_key] = secrets.token_urlsafe(24)
    if env.checklist.rate_limit_url and not present.get("ULTRA_RATE_LIMIT"):
        wanted["ULTRA_RATE_LIMIT"] = f"{max(1, env.checklist.rate_limit_burst // 2)}/1"
    if wanted:
        update_env_file(env.env_file, wanted)
        done.append(f"set {', '.join(wanted)} in {env.env_file} for the checklist's login and rate limit checks")
    if env.runtime == "compose":
        from ultra_ops.engine.runtimes.compose_env import prepare_compose_environment

        done += prepare_compose_environment(env)
    missing = [k for k in env.required_env_keys if k != VERSION_KEY and k not in read_env_file(env.env_file)]
    if missing:
        done.append(f"{env.env_file} still needs: {', '.join(missing)}")
    reached = reached or env
    db = reached.database
    if env.runtime == "compose":
        from ultra_ops.engine.runtimes.compose_env import start_stores

        # The project's own PostgreSQL container creates POSTGRES_DB on its first start.
        done += start_stores(reached)
    try:
        with psycopg.connect(
            **db.conninfo(db.maintenance_db, statement_timeout_s=300, lock_timeout_s=30), autocommit=True
        ) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db.name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db.name)))
                done.append(f"created database {db.name} on {_where(env)}")
    except psycopg.Error as exc:
        raise OperationError(
            f"cannot prepare database {db.name} on {_where(env)}: {str(exc).strip().splitlines()[0]}"
        ) from None
    done.append(f"environment {env.name} is ready")
    return done


def _where(env: Environment) -> str:
    """The database's address as configured (and the host it is on, for a hosted environment)."""
    db = env.database
    at = f"{db.host}:{db.port}"
    return f"{at} of {env.host.describe()}" if env.host is not None else at
