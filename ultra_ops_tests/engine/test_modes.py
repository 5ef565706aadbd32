"""Folders ultra_ops creates are 0700 and files holding secrets or output 0600, from creation."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ultra_ops.engine.backups.store import list_backups
from ultra_ops_tests.support.stack import Stack


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what most shells have: 0755 folders and 0644 files by default
    yield
    os.umask(old)


def test_init_creates_private_folders_and_narrows_wide_ones(
    tmp_path: Path, pg_database: str, loose_umask: None, capsys
) -> None:
    stack = Stack(tmp_path, pg_database)
    env = stack.env
    env.env_file.unlink(missing_ok=True)
    if env.root.exists():
        os.rmdir(env.root)
    assert stack.ops("init") == 0
    for folder in (env.root, env.backup_dir, env.backups_path, env.log_dir, env.state_dir):
        assert _mode(folder) == 0o700, folder
    assert _mode(env.env_file) == 0o600

    env.backups_path.chmod(0o755)
    assert stack.ops("init") == 0
    assert _mode(env.backups_path) == 0o700
    assert f"narrowed {env.backups_path} from 0755 to 0700" in capsys.readouterr().out


def test_deploy_writes_private_files_and_folders(
    tmp_path: Path, pg_database: str, dagster_home: Path, loose_umask: None
) -> None:
    stack = Stack(tmp_path, pg_database)
    env = stack.env
    try:
        assert stack.ops("deploy", "--tag", "v1.0.0") == 0
    finally:
        stack.stop()
    out = env.log_dir / "backend.out"
    assert out.read_text()  # the service's output was written there
    for path in (out, env.log_dir / "backend.log", env.state_dir / "lock", env.state_dir / "releases.sqlite3"):
        assert _mode(path) == 0o600, path
    for folder in (env.log_dir, env.state_dir, env.state_dir / "run", env.backup_dir, env.backups_path):
        assert _mode(folder) == 0o700, folder
    [backup] = list_backups(env)
    assert _mode(backup.path) == 0o700
    assert all(_mode(p) & 0o077 == 0 for p in backup.path.rglob("*") if p.is_file())
