"""Fixtures and hooks: every test gets its own PostgreSQL database, Redis key prefix, ports and folders.

Nothing is mocked: the database, Redis and HTTP peers are real servers on loopback. What tests share
besides fixtures is in support/, which they import directly.

No test records into the operator's Dagster instance: the session sets a DAGSTER_HOME of its own
before any test runs (tests and the processes they start inherit it; `dagster_home` gives a test
one of its own), and the session fails if the repository's `.dagster_home` changed while it ran.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ultra_ops_tests.support.configs import ENVIRONMENTS
from ultra_ops_tests.support.databases import create_database, drop_databases
from ultra_ops_tests.support.services import REDIS_URL
from ultra_ops_tests.support.stack import Stack
from ultra_ops_tests.support.user_instance import USER_HOME, changes, state

# Files whose tests take a minute or more in all, longest first (worker seconds in a full run of six
# workers). ./dev test hands whole files to its workers (--dist loadfile) in this order
# (--no-loadscope-reorder), so the longest start first and the short ones fill in at the end.
SLOW_FILES_FIRST = (
    "test_host_faults.py",  # ~377
    "test_compose_faults.py",  # ~337
    "test_swap.py",  # ~230
    "test_platform.py",  # ~223
    "test_release.py",  # ~197
    "test_compose_environment.py",  # ~192
    "test_release_across_hosts.py",  # ~166
    "test_backups_on_host.py",  # ~162
    "test_platform_stack.py",  # ~148
    "test_browser.py",  # ~126
    "test_interrupts.py",  # ~104
    "test_compose_manual_rollback.py",  # ~88
    "test_run_locks.py",  # ~87
    "test_log_archive.py",  # ~80
    "test_window.py",  # ~79
    "test_release_on_host.py",  # ~66
    "test_secret_leaks.py",  # ~65
    "test_host_lock.py",  # ~63
    "test_launchpad.py",  # ~61
    "test_test_hosts.py",  # ~57
    "test_images_on_host.py",  # ~49
    "test_asset_views.py",  # ~48
    "test_compose_on_host.py",  # ~46
    "test_backup_asset.py",  # ~46
    "test_backup.py",  # ~45
    "test_interrupts_between_steps.py",  # ~42
    "test_ssh.py",  # ~42
    "test_smoke.py",  # ~32
    "test_compose_backup_faults.py",  # ~32
    "test_isolation.py",  # ~29
)


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controller (or a run without xdist) watches
        session.config.stash[_USER_INSTANCE] = state()


def pytest_sessionfinish(session: pytest.Session) -> None:
    before = session.config.stash.get(_USER_INSTANCE, None)
    if before is None:
        return
    changed = changes(before, state())
    if changed:
        session.config.get_terminal_writer().line(
            f"FAILED: the tests changed the operator's Dagster instance: {changed} "
            f"(a test recorded outside its own DAGSTER_HOME, unless you launched runs in {USER_HOME} meanwhile)",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_USER_INSTANCE = pytest.StashKey[tuple[bool, dict[str, str]]]()


@pytest.fixture(scope="session", autouse=True)
def session_dagster_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A Dagster home of the session's own for every test that does not ask for `dagster_home`, and
    for every process a test starts: whatever the operator's shell exports, nothing is recorded in
    the operator's instance, and no in-process CLI call leaves DAGSTER_HOME set for the next test."""
    home = tmp_path_factory.mktemp("session_dagster_home")
    saved = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        yield home
    finally:
        if saved is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = saved


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
