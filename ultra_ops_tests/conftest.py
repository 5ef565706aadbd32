"""Shared fixtures: every test gets its own PostgreSQL database, Redis key prefix, ports and folders.

Nothing is mocked: the database, Redis and HTTP peers are real servers on loopback.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from ultra_ops.cli import main
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
PG = {"host": "127.0.0.1", "port": 5432, "user": os.environ.get("ULTRA_TEST_PGUSER", "postgres")}
REDIS_URL = "redis://127.0.0.1:6379/0"
SAMPLE_MIGRATIONS = REPO / "ultra_ops" / "sample_service" / "migrations"


# Files whose tests take minutes in all start first: ./dev test hands whole files to its workers
# (--dist loadfile), and one of these started last would run alone at the end of the suite.
SLOW_FILES_FIRST = ("test_release.py", "test_swap.py", "test_platform.py", "test_run_locks.py", "test_browser.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _admin() -> psycopg.Connection:
    return psycopg.connect(**PG, dbname="postgres", autocommit=True)


def _create_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def _drop_databases(prefix: str) -> None:
    """Drop the database `prefix` and anything renamed from it (restores swap databases by name)."""
    with _admin() as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",)).fetchall()
        for (db,) in rows:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, empty database, dropped (with anything renamed from it) after the test."""
    name = f"uo_test_{uuid.uuid4().hex[:12]}"
    _create_database(name)
    yield name
    _drop_databases(name)


ENVIRONMENTS = ("development", "staging", "production")


@pytest.fixture
def pg_databases() -> Iterator[dict[str, str]]:
    """One fresh database per environment (development, staging, production), all dropped after."""
    base = f"uo_test_{uuid.uuid4().hex[:12]}"
    names = {env: f"{base}_{env[:4]}" for env in ENVIRONMENTS}
    try:
        for name in names.values():
            _create_database(name)
        yield names
    finally:
        _drop_databases(base)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix that only this test writes under; its keys are deleted afterwards."""
    prefix = f"uo_test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Dagster instance of the test's own, where the CLI records its runs."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def checks_config(tmp_path: Path, database: str, sections: str, *, environment: str = "staging") -> Path:
    """A config whose one environment has its folders, a database and a backend process that does
    nothing: for tests of the checks themselves against servers the test starts. `sections` adds
    tables (verify, redis, notifications, calendar ...)."""
    (tmp_path / "root").mkdir(exist_ok=True)
    config = tmp_path / "ultra_ops.toml"
    config.write_text(f"""
timezone = "UTC"
[environments.{environment}]
runtime = "process"
root = "{tmp_path / "root"}"
state_dir = "{tmp_path / "state"}"
log_dir = "{tmp_path / "logs"}"
backup_dir = "{tmp_path / "backups"}"
[environments.{environment}.database]
name = "{database}"
user = "{PG["user"]}"
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
        health_timeout_s = 20
        required_env_keys = ["ULTRA_VERSION"]
        {extra}

        [environments.{environment}.database]
        host = "127.0.0.1"
        port = 5432
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
        host = "127.0.0.1"
        port = 5432
        name = "{database}"
        user = "{PG["user"]}"
        probe_queries = ["SELECT 1", "SELECT count(*) FROM prompts"]

        [environments.{env}.redis]
        url = "redis://127.0.0.1:6379/{index}"

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


class Stack:
    """One test's environment: config, folders, database and the sample service's port."""

    def __init__(self, tmp_path: Path, database: str, *, extra: str = "", verify_extra: str = "") -> None:
        self.tmp = tmp_path
        self.database = database
        self.port = free_port()
        self.migrations = tmp_path / "migrations"
        shutil.copytree(SAMPLE_MIGRATIONS, self.migrations)
        api = f"http://127.0.0.1:{self.port}/api/v1/prompts"
        verify_extra = f'endpoints = [{{ name = "prompts", url = "{api}", expect_status = 200 }}]\n' + verify_extra
        self.config = write_config(
            tmp_path, database, port=self.port, migrations=self.migrations, extra=extra, verify_extra=verify_extra
        )
        self.env = load_settings(self.config).environment("staging")
        self.env.env_file.write_text("ULTRA_FEATURE_FLAGS=search\nULTRA_VERSION=\n")
        self.env.env_file.chmod(0o600)

    def ops(self, *argv: str) -> int:
        return main([*argv, "--environment", "staging", "--config", str(self.config)])

    def rows(self) -> list[tuple]:
        with psycopg.connect(**PG, dbname=self.database) as conn:
            return conn.execute("SELECT id, title FROM prompts ORDER BY id").fetchall()

    def tables(self) -> set[str]:
        with psycopg.connect(**PG, dbname=self.database) as conn:
            rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        return {r[0] for r in rows}

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)

    def stop(self) -> None:
        get_runtime(self.env).down()


@pytest.fixture
def stack(tmp_path: Path, pg_database: str, dagster_home: Path):
    s = Stack(tmp_path, pg_database)
    yield s
    s.stop()
