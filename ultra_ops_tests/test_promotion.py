"""One release taken from development through staging to production on this machine, as the
shipped config and the demo do: three process-runtime environments, each with its own port,
database, Redis database and folders, every step an `ultra-ops` command recorded in Dagster.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from dagster import DagsterInstance

from ultra_ops.cli import main
from ultra_ops.demo import promotion_steps
from ultra_ops.engine.backups.store import list_backups
from ultra_ops.engine.release.records import find_releases
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.settings import Environment, Settings, load_settings
from ultra_ops_tests.support.configs import ENVIRONMENTS, write_multi_config
from ultra_ops_tests.support.services import PG


@pytest.fixture
def three(tmp_path: Path, pg_databases: dict[str, str], redis_prefix: str, dagster_home: Path) -> Iterator[Settings]:
    settings = load_settings(write_multi_config(tmp_path, pg_databases, redis_prefix=redis_prefix))
    yield settings
    for env in settings.environments.values():
        get_runtime(env).down()
        assert env.redis is not None
        client = redis.Redis.from_url(env.redis.url)
        keys = list(client.scan_iter(match=redis_prefix + "*"))
        if keys:
            client.delete(*keys)


def _ops(settings: Settings, *argv: str) -> int:
    return main([*argv, "--config", str(settings.path)])


def _port(env: Environment) -> int:
    (backend,) = env.processes
    assert backend.port is not None
    return backend.port


def _get(env: Environment, path: str) -> dict:
    response = httpx.get(f"http://127.0.0.1:{_port(env)}{path}", timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def _insert(env: Environment, title: str) -> None:
    with psycopg.connect(**PG, dbname=env.database.name) as conn:
        conn.execute("INSERT INTO prompts (title) VALUES (%s)", (title,))


def test_release_goes_from_development_through_staging_to_production(
    three: Settings, redis_prefix: str, dagster_home: Path
) -> None:
    """v1.0.0 through all three, each on its own database and Redis; then v1.1.0 on staging,
    rolled back, while development and production keep running untouched."""
    envs = [three.environment(name) for name in ENVIRONMENTS]
    for env in envs:
        assert _ops(three, "init", "--environment", env.name) == 0
    for env in envs:  # each deploy verifies before it records the release
        assert _ops(three, "deploy", "--environment", env.name, "--tag", "v1.0.0") == 0

    for env in envs:
        assert _get(env, "/api/v1/version") == {"version": "v1.0.0", "environment": env.name}
        health = _get(env, "/health?detail=true")
        assert health["status"] == "ok" and health["environment"] == env.name
        assert [(r.status, r.version) for r in find_releases(env)] == [("deployed", "v1.0.0")]

    # Each service reads its own database: a row written in one environment is seen there only.
    for env in envs:
        _insert(env, f"only in {env.name}")
    for env in envs:
        titles = {p["title"] for p in _get(env, "/api/v1/prompts")["prompts"]}
        assert {t for t in titles if t.startswith("only in ")} == {f"only in {env.name}"}
    # ... and writes its cache to its own Redis database.
    for env in envs:
        assert env.redis is not None
        client = redis.Redis.from_url(env.redis.url)
        assert sorted(client.scan_iter(match=redis_prefix + "*")) == [
            f"{redis_prefix}{env.name}:prompts:count".encode()
        ]

    # A rollback of staging restores staging's state only.
    dev, staging, prod = envs
    assert _ops(three, "deploy", "--environment", staging.name, "--tag", "v1.1.0") == 0
    assert _get(staging, "/api/v1/version")["version"] == "v1.1.0"
    others = {
        env.name: (env.env_file.read_bytes(), [b.id for b in list_backups(env)], _get(env, "/health"))
        for env in (dev, prod)
    }
    # The config names all three environments: a rollback of one must not rewrite it.
    edited = three.path.read_text() + "\n# edited after v1.1.0\n"
    three.path.write_text(edited)

    assert _ops(three, "rollback", "--environment", staging.name, "--yes") == 0

    assert _get(staging, "/api/v1/version")["version"] == "v1.0.0"
    assert b"ULTRA_VERSION=v1.0.0" in staging.env_file.read_bytes()
    assert three.path.read_text() == edited
    for env in (dev, prod):
        assert (env.env_file.read_bytes(), [b.id for b in list_backups(env)], _get(env, "/health")) == others[env.name]
        assert [r.status for r in find_releases(env)] == ["deployed"]

    # The records say what happened at each step, each tied to its Dagster run.
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = {r.run_id: r for r in instance.get_runs()}
    user = getpass.getuser()
    for env in envs:
        for record in find_releases(env):
            run = runs[record.run_id]
            assert run.tags["ultra_ops/environment"] == env.name and run.status.value == "SUCCESS"
            assert run.job_name == f"{record.operation}_job"
            assert record.launched_by == user
            assert record.started_at <= record.ended_at
    rollback, deploy, first = find_releases(staging)
    assert (first.operation, first.version, first.previous_version, first.status) == (
        "deploy",
        "v1.0.0",
        None,
        "deployed",
    )
    assert (deploy.operation, deploy.version, deploy.previous_version, deploy.status) == (
        "deploy",
        "v1.1.0",
        "v1.0.0",
        "deployed",
    )
    assert (rollback.operation, rollback.version, rollback.previous_version, rollback.status) == (
        "rollback",
        "v1.0.0",
        "v1.1.0",
        "rolled_back",
    )
    assert rollback.backup_id == deploy.backup_id  # the backup v1.1.0's deploy took
    assert first.ended_at <= deploy.started_at and deploy.ended_at <= rollback.started_at


@pytest.mark.unit
def test_demo_needs_the_three_environments(tmp_path: Path, dagster_home: Path, capsys) -> None:
    config = write_multi_config(tmp_path, {"development": "a", "staging": "b"}, redis_prefix="x:")
    assert main(["demo", "--config", str(config)]) == 2
    assert "does not name production" in capsys.readouterr().err
    assert not any(dagster_home.iterdir())  # no run was started
    steps = [argv for _, argv in promotion_steps([])]
    deploys = [(argv[2], argv[4]) for argv in steps if argv[0] == "deploy"]
    assert deploys == [
        ("development", "v1.0.0"),
        ("staging", "v1.0.0"),
        ("production", "v1.0.0"),
        ("development", "v1.1.0"),
        ("staging", "v1.1.0"),
    ]
    assert steps[-2:] == [["rollback", "--environment", "staging", "--yes"], ["verify", "--environment", "staging"]]
