"""The environment's stores: `[environments.X.database]` (PostgreSQL) and `[environments.X.redis]`.

[environments.production.database]
host = "127.0.0.1"
port = 5432
name = "ultra_prod"
user = "ultra"
password_env = "ULTRA_PROD_DB_PASSWORD"   # the variable that holds it, never the password
# password_key = "POSTGRES_PASSWORD"       # or: the key of the environment's env file that holds it
#                                          # (a compose environment whose containers read it there)
[environments.production.redis]
url = "redis://127.0.0.1:6379/1"          # no credentials in the URL: username and password_env
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ultra_ops.engine.settings.table import TableReader


@dataclass(frozen=True)
class DatabaseSettings:
    host: str
    port: int
    name: str
    user: str
    password_env: str | None = None
    maintenance_db: str = "postgres"
    probe_queries: tuple[str, ...] = ("SELECT 1",)
    latency_budget_ms: float = 1000.0
    connect_timeout_s: float = 5.0  # every client ultra_ops starts: psycopg and the pg tools
    password_key: str | None = None  # the env file's key holding the password, if password_env is unset
    env_file: Path | None = None  # the environment's env file, where password_key is read

    def libpq_connect_timeout(self, at_most: float | None = None) -> int:
        """libpq's connect_timeout: whole seconds, and anything below 2 counts as 2."""
        seconds = self.connect_timeout_s if at_most is None else min(self.connect_timeout_s, at_most)
        return max(2, math.ceil(seconds))

    def password(self) -> str | None:
        return _password(self.password_env, self.password_key, self.env_file)

    def conninfo(
        self,
        dbname: str | None = None,
        *,
        statement_timeout_s: float | None = None,
        lock_timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Keyword arguments for psycopg.connect; the password only comes from the environment.
        Always a connect timeout; statement and lock timeouts (server side) when given."""
        info: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": dbname or self.name,
            "user": self.user,
            "connect_timeout": self.libpq_connect_timeout(),
        }
        options = []
        if statement_timeout_s is not None:
            options.append(f"-c statement_timeout={max(1, int(statement_timeout_s * 1000))}")
        if lock_timeout_s is not None:
            options.append(f"-c lock_timeout={max(1, int(lock_timeout_s * 1000))}")
        if options:
            info["options"] = " ".join(options)
        pw = self.password()
        if pw:
            info["password"] = pw
        return info

    def libpq_env(self) -> dict[str, str]:
        """PG* variables for pg_dump/pg_restore/psql, so no secret is ever on a command line."""
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.name,
        }
        pw = self.password()
        if pw:
            env["PGPASSWORD"] = pw
        return env


@dataclass(frozen=True)
class RedisSettings:
    url: str
    username: str | None = None
    password_env: str | None = None
    password_key: str | None = None
    env_file: Path | None = None

    def password(self) -> str | None:
        return _password(self.password_env, self.password_key, self.env_file)

    def password_source(self) -> str | None:
        """Where the password is read, for an error that says it is missing."""
        if self.password_env:
            return self.password_env
        return f"{self.password_key} in {self.env_file}" if self.password_key else None


def _password(variable: str | None, key: str | None, env_file: Path | None) -> str | None:
    """The variable's value when it is set, else the env file's key: a compose environment's
    containers and ultra_ops then read one password from one place."""
    if variable and os.environ.get(variable):
        return os.environ[variable]
    if key and env_file is not None:
        from ultra_ops.engine.envfile import read_env_file  # a plain dotenv parser, no settings

        return read_env_file(env_file).get(key) or None
    return None


def read_database(r: TableReader, env_file: Path | None = None) -> DatabaseSettings:
    port = r.port("port", 5432)
    db = DatabaseSettings(
        host=r.get("host", str, "127.0.0.1"),
        port=port,
        name=r.get("name", str, required=True),
        user=r.get("user", str, "postgres"),
        password_env=r.env_var_name("password_env"),
        maintenance_db=r.get("maintenance_db", str, "postgres"),
        probe_queries=r.string_list("probe_queries", ("SELECT 1",)),
        latency_budget_ms=float(r.positive("latency_budget_ms", 1000.0, at_most=600_000, unit=" ms")),
        connect_timeout_s=r.above_zero("connect_timeout_s", 5.0, at_most=300, unit=" seconds"),
        password_key=r.env_var_name("password_key"),
        env_file=env_file,
    )
    r.finish()
    return db


def read_redis(r: TableReader, env_file: Path | None = None) -> RedisSettings:
    url = r.get("url", str, required=True)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise r.fail("url", f"expected a redis:// URL, got {url!r}")
    if "@" in url:
        raise r.fail("url", "must not carry credentials: name them with username and password_env")
    settings = RedisSettings(
        url=url,
        username=r.get("username", str, None),
        password_env=r.env_var_name("password_env"),
        password_key=r.env_var_name("password_key"),
        env_file=env_file,
    )
    r.finish()
    return settings
