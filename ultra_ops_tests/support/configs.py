"""The config files tests and benchmarks run against: one process-runtime environment running the
sample service (write_config), several as the shipped config has them (write_multi_config), one
whose checks are pointed at servers the caller starts (checks_config), or a compose environment on a
host (config_with_host by its host table, hosted_config by the addresses it reaches). PostgreSQL and
Redis are where services.py says."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from ultra_ops_tests.support.ports import free_port
from ultra_ops_tests.support.services import PG, REDIS_URL, SAMPLE_MIGRATIONS

ENVIRONMENTS = ("development", "staging", "production")


def checks_config(
    tmp_path: Path,
    database: str,
    sections: str,
    *,
    environment: str = "staging",
    name: str = "ultra_ops.toml",
    environment_keys: str = "",
    database_keys: str = "",
) -> Path:
    """A config whose one environment has its folders, a database and a backend process that does
    nothing: for tests of the checks themselves against servers the test starts, and for the
    benchmarks. `sections` adds tables (verify, redis, notifications, calendar ...);
    `environment_keys` and `database_keys` add keys to those two tables (TOML wants a table's keys
    before its sub-tables)."""
    (tmp_path / "root").mkdir(parents=True, exist_ok=True)
    config = tmp_path / name
    config.write_text(f"""
timezone = "UTC"
[environments.{environment}]
runtime = "process"
root = "{tmp_path / "root"}"
state_dir = "{tmp_path / "state"}"
log_dir = "{tmp_path / "logs"}"
backup_dir = "{tmp_path / "backups"}"
{environment_keys}
[environments.{environment}.database]
host = "{PG["host"]}"
port = {PG["port"]}
name = "{database}"
user = "{PG["user"]}"
{database_keys}
[environments.{environment}.processes.backend]
command = ["true"]
{sections}""")
    return config


def write_config(
    tmp_path: Path,
    database: str,
    *,
    environment: str = "staging",
    port: int | None = None,
    migrations: Path | None = None,
    extra: str = "",
    verify_extra: str = "",
    backup_format: str = "directory",
    health_timeout_s: float = 20,
) -> Path:
    """A config with one process-runtime environment running the sample service on its own port."""
    port = port or free_port()
    migrations = migrations or SAMPLE_MIGRATIONS
    text = f"""
        timezone = "UTC"

        [environments.{environment}]
        runtime = "process"
        root = "{tmp_path / "root"}"
        backup_dir = "{tmp_path / "backups"}"
        log_dir = "{tmp_path / "logs"}"
        state_dir = "{tmp_path / "state"}"
        migrations = "{migrations}"
        health_timeout_s = {health_timeout_s}
        required_env_keys = ["ULTRA_VERSION"]
        {extra}

        [environments.{environment}.database]
        host = "{PG["host"]}"
        port = {PG["port"]}
        name = "{database}"
        user = "{PG["user"]}"
        probe_queries = ["SELECT 1"]

        [environments.{environment}.redis]
        url = "{REDIS_URL}"

        [environments.{environment}.backup]
        format = "{backup_format}"

        [environments.{environment}.processes.backend]
        command = ["{sys.executable}", "-m", "ultra_ops.sample_service"]
        port = {port}
        health_url = "http://127.0.0.1:{port}/health"

        [environments.{environment}.verify]
        timeout_s = 3
        retries = 1
        backoff_s = 0.1
        health_urls = ["http://127.0.0.1:{port}/health?detail=true"]
        {verify_extra}
    """
    path = tmp_path / "ultra_ops.toml"
    path.write_text(textwrap.dedent(text))
    (tmp_path / "root").mkdir(exist_ok=True)
    return path


def write_multi_config(
    tmp_path: Path,
    databases: dict[str, str],
    *,
    redis_prefix: str,
    ports: dict[str, int] | None = None,
    migrations: Path | None = None,
) -> Path:
    """A config with several process-runtime environments on this machine, as the shipped one:
    each its own port, database, Redis database (0, 1, 2 ... in order, keys under
    `redis_prefix<environment>:`), root, log, state and backup folders."""
    ports = ports or {env: free_port() for env in databases}
    migrations = migrations or SAMPLE_MIGRATIONS
    sections = [
        f"""
        timezone = "UTC"

        [defaults]
        backup_dir = "{tmp_path / "backups"}"
        migrations = "{migrations}"
        health_timeout_s = 20
        required_env_keys = ["ULTRA_VERSION"]
    """
    ]
    for index, (env, database) in enumerate(databases.items()):
        port, folder = ports[env], tmp_path / env
        api = f"http://127.0.0.1:{port}/api/v1"
        sections.append(f"""
        [environments.{env}]
        runtime = "process"
        root = "{folder / "root"}"
        log_dir = "{folder / "logs"}"
        state_dir = "{folder / "state"}"

        [environments.{env}.database]
        host = "{PG["host"]}"
        port = {PG["port"]}
        name = "{database}"
        user = "{PG["user"]}"
        probe_queries = ["SELECT 1", "SELECT count(*) FROM prompts"]

        [environments.{env}.redis]
        url = "{REDIS_URL.rsplit("/", 1)[0]}/{index}"

        [environments.{env}.processes.backend]
        command = ["{sys.executable}", "-m", "ultra_ops.sample_service"]
        port = {port}
        health_url = "http://127.0.0.1:{port}/health"
        env = {{ ULTRA_REDIS_PREFIX = "{redis_prefix}{env}:" }}

        [environments.{env}.verify]
        timeout_s = 3
        retries = 1
        backoff_s = 0.1
        health_urls = ["http://127.0.0.1:{port}/health?detail=true"]
        endpoints = [
          {{ name = "prompts", url = "{api}/prompts" }},
          {{ name = "version", url = "{api}/version" }},
        ]
        """)
    path = tmp_path / "ultra_ops.toml"
    path.write_text("".join(textwrap.dedent(s) for s in sections))
    for env in databases:
        (tmp_path / env / "root").mkdir(parents=True, exist_ok=True)
    return path


def config_with_host(tmp_path: Path, host: str, runtime: str = "compose") -> Path:
    """A config whose staging environment has the host table `host` (its keys, as TOML lines)."""
    path = tmp_path / "ultra_ops.toml"
    path.write_text(f"""
[environments.staging]
runtime = "{runtime}"
root = "{tmp_path / "root"}"
compose_file = "compose.yml"
processes.backend = {{ command = ["true"] }}
[environments.staging.database]
host = "127.0.0.1"
port = 5432
name = "ultra_staging"
user = "ultra"
[environments.staging.host]
{host}
""")
    return path


def hosted_config(
    tmp_path: Path,
    host: str | None,
    *,
    database: tuple[str, int],
    redis_url: str,
    sections: str = "",
    password_key: str | None = None,
) -> Path:
    """A compose staging environment reached at the addresses a test gives: its database at
    `database` (host, port), Redis at `redis_url`, then `sections` (TOML tables under
    [environments.staging], as written), and the host table `host` (its keys, as TOML lines; None:
    no host, the environment is this machine's)."""
    db_host, db_port = database
    password = f'password_key = "{password_key}"\n' if password_key else ""
    host_table = f"[environments.staging.host]\n{host}" if host is not None else ""
    path = tmp_path / "ultra_ops.toml"
    path.write_text(f"""
[environments.staging]
runtime = "compose"
root = "{tmp_path / "root"}"
compose_file = "compose.yml"
[environments.staging.database]
host = "{db_host}"
port = {db_port}
name = "ultra_staging"
user = "ultra"
{password}[environments.staging.redis]
url = "{redis_url}"
{sections}{host_table}""")
    return path
