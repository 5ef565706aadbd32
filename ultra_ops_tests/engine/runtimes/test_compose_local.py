"""The pieces of the compose path that need no engine: the local config, what init writes into a
compose env file, the password read from it, the status parsers, the local images' content hash."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ultra_ops.engine.errors import ConfigError
from ultra_ops.engine.runtimes.compose import ComposeRuntime
from ultra_ops.engine.runtimes.compose_env import compose_variables, prepare_compose_environment
from ultra_ops.engine.runtimes.compose_status import describe, parse_inspect, parse_stats
from ultra_ops.engine.settings import load_settings
from ultra_ops.local_images import images
from ultra_ops.sample_service.packaging import REQUIREMENTS
from ultra_ops_tests.support.docker import LOCAL_CONFIG
from ultra_ops_tests.support.services import REPO

pytestmark = pytest.mark.unit


def _local_settings(tmp_path: Path):  # noqa: ANN202
    text = LOCAL_CONFIG.read_text().replace("../var/compose", str(tmp_path / "compose"))
    config = tmp_path / "local.toml"
    config.write_text(text)
    return load_settings(config)


def test_local_config_runs_staging_and_production_apart(tmp_path: Path) -> None:
    settings = _local_settings(tmp_path)
    staging, production = settings.environment("staging"), settings.environment("production")
    for env in (staging, production):
        assert env.runtime == "compose" and env.compose_command == ("docker-compose",)
        assert env.database.password_key == "POSTGRES_PASSWORD" and env.redis.password_key == "REDIS_PASSWORD"
    assert staging.compose_project != production.compose_project
    ports = [compose_variables(e) for e in (staging, production)]
    for key in ("ULTRA_BACKEND_PORT", "ULTRA_POSTGRES_PORT", "ULTRA_REDIS_PORT"):
        assert ports[0][key] != ports[1][key]
        assert int(ports[0][key]) not in (5432, 6379)  # the host's own PostgreSQL and Redis
    assert ports[0]["POSTGRES_PASSWORD"] != ports[1]["POSTGRES_PASSWORD"]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not on PATH")
def test_init_writes_what_the_compose_file_needs(tmp_path: Path) -> None:
    """prepare_compose_environment: the compose file's copy and an env file with which `docker-compose
    config` resolves the local images, the published ports and the passwords; run twice, it keeps them."""
    env = _local_settings(tmp_path).environment("staging")
    env.root.mkdir(parents=True)
    done = prepare_compose_environment(env)
    assert env.compose_file.is_file() and any("POSTGRES_PASSWORD" in line for line in done)
    first = env.env_file.read_text()
    assert prepare_compose_environment(env) == [] and env.env_file.read_text() == first
    resolved = ComposeRuntime(env).config("v1.2.3")
    assert "image: ultra-local/postgres:15" in resolved and "image: ultra-local/redis:7" in resolved
    assert "PYTHON_IMAGE: ultra-local/python:3.11" in resolved
    assert "127.0.0.1:5501:5432/tcp" in resolved and "127.0.0.1:8101:8000/tcp" in resolved
    password = env.database.password()
    assert password and password in first and password not in resolved  # redacted
    # The backend's logs: bind-mounted from log_dir, also for a bare compose command (the env file).
    assert f"- {env.log_dir}:/app/logs:rw" in resolved
    bare = subprocess.run(
        ["docker-compose", "-f", str(env.compose_file), "--env-file", str(env.env_file), "config"],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert f"- {env.log_dir}:/app/logs:rw" in bare
    # Without it (no ultra_ops, no env file key), the shipped default: the named volume.
    default = subprocess.run(
        ["docker-compose", "-f", str(env.compose_file), "config"],
        env={"PATH": os.environ["PATH"], "POSTGRES_PASSWORD": "x", "REDIS_PASSWORD": "y"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "- backend-logs:/app/logs:rw" in default
    # An environment's copy from before the log folder was mounted is named, not rewritten.
    old = env.compose_file.read_text().replace("${ULTRA_LOG_VOLUME:-backend-logs}", "backend-logs")
    env.compose_file.write_text(old)
    assert [line for line in prepare_compose_environment(env) if "ULTRA_LOG_VOLUME" in line]
    assert env.compose_file.read_text() == old


def test_password_key_reads_the_env_file_unless_the_variable_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _local_settings(tmp_path).environment("staging")
    db = dataclasses.replace(env.database, password_env="UO_TEST_DB_PASSWORD")
    assert db.password() is None  # no env file yet
    env.env_file.parent.mkdir(parents=True)
    env.env_file.write_text("POSTGRES_PASSWORD=from-the-file\n")
    assert db.password() == "from-the-file" and db.libpq_env()["PGPASSWORD"] == "from-the-file"
    monkeypatch.setenv("UO_TEST_DB_PASSWORD", "from-the-variable")
    assert db.password() == "from-the-variable"


def test_compose_env_refuses_secrets_in_the_config(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        LOCAL_CONFIG.read_text().replace('ULTRA_REDIS_IMAGE = "ultra-local/redis:7"', 'REDIS_PASSWORD = "hunter22"')
    )
    with pytest.raises(ConfigError, match="compose_env.REDIS_PASSWORD.*secret"):
        load_settings(config)


def test_status_from_inspect_and_stats() -> None:
    containers = parse_inspect(
        "backend\trunning\thealthy\t/p_backend_1\tultra-ai/backend:v1.0.0\n"
        "postgres\texited\t\t/p_postgres_1\tultra-local/postgres:15\n"
    )
    usage = parse_stats(json.dumps({"Name": "p_backend_1", "CPUPerc": "1.50%", "MemUsage": "20MiB / 1GiB"}))
    backend, postgres, redis = describe(["backend", "postgres", "redis"], {"backend"}, containers, usage)
    assert backend.running and backend.memory_bytes == 20 * 1024 * 1024 and backend.state == "running"
    assert "running (healthy), ultra-ai/backend:v1.0.0, CPU 1.5%" == backend.detail
    assert not postgres.running and postgres.state == "exited" and postgres.memory_bytes is None
    assert not redis.running and redis.detail == "no container"


def test_local_image_tags_follow_their_recipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipes = tmp_path / "images"
    shutil.copytree(images.RECIPES_DIR, recipes)
    monkeypatch.setattr(images, "RECIPES_DIR", recipes)
    python = images.RECIPES[0]
    before, rootfs = python.image, python.rootfs_digest()
    assert before == python.image  # stable
    (recipes / "python" / "Dockerfile").write_text((recipes / "python" / "Dockerfile").read_text() + "# changed\n")
    assert python.image != before and python.rootfs_digest() == rootfs  # the rootfs is reused
    (recipes / "python" / "packages").write_text("python3\npython3-venv\nca-certificates\ncurl\n")
    assert python.rootfs_digest() != rootfs
    assert images.image_variables()["ULTRA_POSTGRES_IMAGE"] == "ultra-local/postgres:15"


def test_backend_requirements_are_what_the_local_python_image_holds() -> None:
    recipe = (REPO / "deploy" / "images" / "python" / "requirements.txt").read_text()
    pins = [line for line in recipe.splitlines() if line and not line.startswith("#")]
    assert pins == REQUIREMENTS.splitlines()


def test_standin_repository_carries_the_backend_image_source(tmp_path: Path) -> None:
    """The demo's stand-in Ultra AI repository has the backend's Dockerfile on main; one made before
    it had one gets it as a commit of its own."""
    from ultra_ops.demo_calendar import MARKER, ensure_backend_source, ensure_repository
    from ultra_ops.engine.shell import run

    repo = tmp_path / "ultra-ai"
    ensure_repository(repo)
    tracked = run(["git", "-C", str(repo), "ls-files"], timeout=30).stdout.split()
    assert {"Dockerfile", "requirements.txt", "backend/ultra_ops/sample_service/app.py"} <= set(tracked)
    assert "backend/ultra_ops/sample_service/packaging.py" not in tracked
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in (repo / "Dockerfile").read_text()
    assert ensure_backend_source(repo) == []  # already there
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    run([*git, "rm", "-q", "-r", "Dockerfile", "backend", "requirements.txt", ".dockerignore"], timeout=30)
    run([*git, "commit", "-q", "-m", "as an older stand-in was"], timeout=30)
    assert (repo / ".git" / MARKER).is_file()
    assert ensure_backend_source(repo) == [f"added the backend's Dockerfile and source to {repo} (main)"]
    assert run([*git, "log", "-1", "--format=%s"], timeout=30).stdout.strip() == "Backend Dockerfile"
    assert (repo / "Dockerfile").is_file()


def test_compose_demo_steps_and_refusals(tmp_path: Path) -> None:
    """`ultra-ops demo --compose`: both releases made before anything deploys, every deploy builds
    (no --skip-build), the rollback comes after the second release; a process config is refused."""
    from ultra_ops.demo_compose import compose_steps, run_compose_demo
    from ultra_ops.engine.errors import InputError

    steps = [argv for _, argv in compose_steps("v3.0.0", "v3.1.0", ["--config", "c.toml"])]
    assert [a[0] for a in steps[:4]] == ["release-branch", "release-branch", "init", "init"]
    deploys = [a for a in steps if a[0] == "deploy"]
    assert [(a[2], a[-1]) for a in deploys] == [("staging", "v3.0.0"), ("production", "v3.0.0"), ("staging", "v3.1.0")]
    assert not any("--skip-build" in a for a in steps)
    assert steps.index(["rollback", "--environment", "staging", "--config", "c.toml", "--yes"]) > steps.index(
        deploys[-1]
    )
    process_config = REPO / "ultra_ops.toml"
    with pytest.raises(InputError, match="compose environments"):
        run_compose_demo(load_settings(process_config), [], run=lambda argv: 0, progress=print, out=print)
