"""A full disk during a compose backup: the environment's backup folder on a tiny tmpfs, so the dump
of the project's PostgreSQL runs out of space. `backups create` and a deploy's backup step each end
with one error naming the folder and its disk, no partial backup listed or on disk, the
environment untouched and still serving; with space back, a backup succeeds."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import psycopg
import pytest

from ultra_ops.cli import main
from ultra_ops.engine.backups.store import list_backups
from ultra_ops.engine.deployed import deployed_version
from ultra_ops.engine.settings import Environment, load_settings
from ultra_ops_tests.support.docker import ComposeEnvironment, compose_release, docker

pytestmark = pytest.mark.docker

TMPFS_MB = 2


def ops(capsys: pytest.CaptureFixture[str], env: ComposeEnvironment, *argv: str) -> tuple[int, str]:
    code = main([*argv, "--environment", env.environment, "--config", str(env.config)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def mount_tmpfs(folder: Path, size_mb: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(folder)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def on_disk(env: Environment) -> list[str]:
    """Everything in the backup folder, temp folders and owner files included."""
    return sorted(os.listdir(env.backups_path)) if env.backups_path.is_dir() else []


def test_full_disk_during_backup_leaves_nothing_and_the_environment_serving(
    compose_env: ComposeEnvironment, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    env = compose_env
    # The checklist's disk floor below the tmpfs: the deploy must get as far as its backup step.
    env.config.write_text(env.config.read_text().replace("[defaults]\n", "[defaults]\nmin_free_disk_mb = 1\n", 1))
    settings_env = load_settings(env.config).environment(env.environment)
    backup_dir = settings_env.backup_dir
    mount_tmpfs(backup_dir, TMPFS_MB)
    try:
        assert ops(capsys, env, "init")[0] == 0
        first, second = compose_release(env, 1), compose_release(env, 2)
        code, out = ops(capsys, env, "deploy", "--tag", first)  # its backup, of an empty database, fits
        assert code == 0, out
        health = f"http://127.0.0.1:{env.ports['backend']}/health"
        with psycopg.connect(**env.conninfo()) as conn:
            # About 8 MB of random hex, which gzip halves at best: no dump of it fits in 2 MB.
            conn.execute(
                "INSERT INTO prompts (title) SELECT md5(random()::text) || md5(random()::text) "
                "|| md5(random()::text) || md5(random()::text) FROM generate_series(1, 60000)"
            )
            rows = conn.execute("SELECT count(*) FROM prompts").fetchone()[0]
        backups_before = [b.id for b in list_backups(settings_env)]
        files_before = on_disk(settings_env)
        used_before = shutil.disk_usage(backup_dir).used

        code, out = ops(capsys, env, "backups", "create")
        assert code == 1, out
        errors = [line for line in out.splitlines() if "no space left" in line.lower()]
        assert errors, out
        assert str(settings_env.backups_path) in errors[0] and "free" in errors[0], errors[0]
        assert [b.id for b in list_backups(settings_env)] == backups_before
        assert on_disk(settings_env) == files_before
        assert shutil.disk_usage(backup_dir).used == used_before

        code, out = ops(capsys, env, "deploy", "--tag", second)
        assert code == 1, out
        assert any(
            "no space left" in line.lower() and str(settings_env.backups_path) in line for line in out.splitlines()
        ), out
        assert "compose build" not in out and "compose up" not in out  # nothing after the backup step ran
        assert on_disk(settings_env) == files_before
        # Untouched: the first release serves its database, the env file still names it.
        assert httpx.get(health, timeout=5).json()["version"] == first
        assert deployed_version(settings_env) == first
        with psycopg.connect(**env.conninfo()) as conn:
            assert conn.execute("SELECT count(*) FROM prompts").fetchone()[0] == rows
        running = docker("inspect", "--format", "{{.Config.Image}}", env.container("backend")).stdout.strip()
        assert running == f"ultra-ai/backend:{first}"

        # Space back: the same command succeeds.
        subprocess.run(
            ["mount", "-o", "remount,size=64m", str(backup_dir)], check=True, capture_output=True, timeout=30
        )
        code, out = ops(capsys, env, "backups", "create")
        assert code == 0, out
        after = list_backups(settings_env)
        assert len(after) == len(backups_before) + 1 and after[0].tables["public.prompts"] == rows
    finally:
        subprocess.run(["umount", "-l", str(backup_dir)], capture_output=True, timeout=30)
