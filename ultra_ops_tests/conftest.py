"""Fixtures and hooks: every test gets its own PostgreSQL database, Redis key prefix, ports and folders.

Nothing is mocked: the database, Redis and HTTP peers are real servers on loopback. What tests share
besides fixtures is in support/, which they import directly.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ultra_ops_tests.support.configs import ENVIRONMENTS
from ultra_ops_tests.support.databases import create_database, drop_databases
from ultra_ops_tests.support.services import REDIS_URL
from ultra_ops_tests.support.stack import Stack

# Files whose tests take minutes in all start first: ./dev test hands whole files to its workers
# (--dist loadfile), and one of these started last would run alone at the end of the suite.
SLOW_FILES_FIRST = (
    "test_release.py",
    "test_swap.py",
    "test_platform.py",
    "test_run_locks.py",
    "test_browser.py",
    "test_compose_environment.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, empty database, dropped (with anything renamed from it) after the test."""
    name = f"uo_test_{uuid.uuid4().hex[:12]}"
    create_database(name)
    yield name
    drop_databases(name)


@pytest.fixture
def pg_databases() -> Iterator[dict[str, str]]:
    """One fresh database per environment (development, staging, production), all dropped after."""
    base = f"uo_test_{uuid.uuid4().hex[:12]}"
    names = {env: f"{base}_{env[:4]}" for env in ENVIRONMENTS}
    try:
        for name in names.values():
            create_database(name)
        yield names
    finally:
        drop_databases(base)


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


@pytest.fixture
def stack(tmp_path: Path, pg_database: str, dagster_home: Path):
    s = Stack(tmp_path, pg_database)
    yield s
    s.stop()
