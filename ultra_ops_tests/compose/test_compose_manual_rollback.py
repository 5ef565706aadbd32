"""The release document's manual rollback on a compose environment's backup, its commands run
literally (with the environment's compose file, project and env file, from the folder that holds
backups/): `docker-compose down`, `tar -xzf` of the backup into rollback/, `cp -r rollback/* ./`,
the database as the README states it, `docker-compose up -d`. The backend ends on the restored
release's image with the restored release's data, and `ultra-ops verify` passes."""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import psycopg
import pytest

from ultra_ops.cli import main
from ultra_ops.engine.envfile import read_env_file
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.docker import ComposeEnvironment, compose_release, docker

pytestmark = pytest.mark.docker


def ops(capsys: pytest.CaptureFixture[str], env: ComposeEnvironment, *argv: str) -> tuple[int, str]:
    code = main([*argv, "--environment", env.environment, "--config", str(env.config)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def titles(env: ComposeEnvironment) -> set[str]:
    with psycopg.connect(**env.conninfo()) as conn:
        return {row[0] for row in conn.execute("SELECT title FROM prompts")}


def test_the_documents_manual_rollback_restores_release_and_data(
    compose_env: ComposeEnvironment, capsys: pytest.CaptureFixture[str]
) -> None:
    env = compose_env
    settings_env = load_settings(env.config).environment(env.environment)
    assert ops(capsys, env, "init")[0] == 0
    first, second = compose_release(env, 1), compose_release(env, 2)
    code, out = ops(capsys, env, "deploy", "--tag", first)
    assert code == 0, out
    with psycopg.connect(**env.conninfo()) as conn:
        conn.execute("INSERT INTO prompts (title) VALUES ('written under the first release')")
    code, out = ops(capsys, env, "deploy", "--tag", second)  # its backup: the first release's state
    assert code == 0, out
    with psycopg.connect(**env.conninfo()) as conn:
        conn.execute("INSERT INTO prompts (title) VALUES ('written under the second release')")
    values = read_env_file(env.env_file)
    assert values["ULTRA_VERSION"] == values["ULTRA_IMAGE_TAG"] == second

    here = settings_env.backup_dir.parent  # the folder the document's commands run in
    root = env.root.relative_to(here)
    compose = [
        "docker-compose",
        *(
            "-f",
            str(env.compose_file.relative_to(here)),
            "-p",
            env.project,
            "--env-file",
            str(root / env.env_file.name),
        ),
    ]

    def run(*argv: str, shell: bool = False, extra: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            argv[0] if shell else list(argv),
            shell=shell,
            cwd=here,
            env={**os.environ, **(extra or {})},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
        return done.stdout

    # 1. Stop the current services.
    run(*compose, "down")
    # 2. Locate the latest backup, extract it, copy the files back.
    listing = run("ls", "-l", f"backups/{env.environment}/")
    latest = sorted(line.split()[-1] for line in listing.splitlines() if line.startswith("d"))[-1]
    run("mkdir", "-p", "rollback")
    run("tar", "-xzf", f"backups/{env.environment}/{latest}/files.tar.gz", "-C", "rollback/")
    run("cp -r rollback/* ./", shell=True)
    assert read_env_file(env.env_file)["ULTRA_IMAGE_TAG"] == first
    # The database, as the README states it: PostgreSQL alone, then the backup's dump.
    run(*compose, "up", "-d", "postgres")
    deadline = time.monotonic() + 60
    while subprocess.run([*compose, "exec", "-T", "postgres", "pg_isready", "-q"], cwd=here, timeout=60).returncode:
        assert time.monotonic() < deadline, "PostgreSQL did not become ready"
        time.sleep(0.5)
    restored_values = read_env_file(env.env_file)
    run(
        "pg_restore",
        *("-h", "127.0.0.1", "-p", restored_values["ULTRA_POSTGRES_PORT"], "-U", "ultra", "-d", "postgres"),
        *("--clean", "--if-exists", "--create", f"backups/{env.environment}/{latest}/database"),
        extra={"PGPASSWORD": restored_values["POSTGRES_PASSWORD"]},
    )
    # 3. Restart the services.
    run(*compose, "up", "-d")

    # 4. Verify: the first release, its image (not rebuilt, not :latest), its data.
    health = f"http://127.0.0.1:{env.ports['backend']}/health"
    deadline = time.monotonic() + 60
    while True:
        try:
            served = httpx.get(health, timeout=2).json()["version"]
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "the backend did not answer after docker-compose up -d"
            time.sleep(0.5)
    assert served == first
    running = docker("inspect", "--format", "{{.Config.Image}}", env.container("backend")).stdout.strip()
    assert running == f"ultra-ai/backend:{first}"
    assert titles(env) >= {"written under the first release"}
    assert "written under the second release" not in titles(env)
    code, out = ops(capsys, env, "verify")
    assert code == 0, out
