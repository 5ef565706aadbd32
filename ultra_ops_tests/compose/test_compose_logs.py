"""Log rotation and archiving on a compose environment: the backend's /app/logs is the environment's
log_dir (a bind mount), so `ultra-ops maintenance archive-logs` archives what the backend in its
container really wrote, and the backend keeps logging into a new file after the rotation."""

from __future__ import annotations

import stat
import subprocess
import tarfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
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


def logged(log: Path, text: str, timeout_s: float = 15.0) -> bool:
    """Whether `text` reaches the file within the time (the backend writes each request's line
    as it answers; the wait is for the write, not a guess at its duration)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.is_file() and text in log.read_text(errors="replace"):
            return True
        time.sleep(0.1)
    return False


def test_archive_logs_archives_what_the_backend_container_wrote(
    compose_env: ComposeEnvironment, capsys: pytest.CaptureFixture[str]
) -> None:
    env = compose_env
    log_dir = load_settings(env.config).environment(env.environment).log_dir
    code, out = ops(capsys, env, "init")
    assert code == 0, out
    # Bare compose commands mount the same folder: init wrote it into the env file.
    assert read_env_file(env.env_file)["ULTRA_LOG_VOLUME"] == str(log_dir)
    version = compose_release(env, 1)
    code, out = ops(capsys, env, "deploy", "--tag", version)
    assert code == 0, out
    mounts = docker(
        "inspect",
        "--format",
        "{{range .Mounts}}{{.Type}} {{.Source}} {{.Destination}}\n{{end}}",
        env.container("backend"),
    ).stdout
    assert f"bind {log_dir} /app/logs" in mounts
    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700  # made by ultra_ops, not by dockerd

    backend_log = log_dir / "backend.log"
    before = uuid.uuid4().hex
    for _ in range(5):
        assert httpx.get(f"http://127.0.0.1:{env.ports['backend']}/health?probe={before}", timeout=5).status_code == 200
    assert logged(backend_log, before), "the backend's request lines never reached log_dir"
    day = datetime.fromtimestamp(backend_log.stat().st_mtime).date()

    code, out = ops(capsys, env, "maintenance", "archive-logs", "--day", day.isoformat())
    assert code == 0, out
    archive = log_dir / "archive" / f"logs_{day:%Y%m%d}.tar.gz"
    listed = subprocess.run(["tar", "-tzf", str(archive)], capture_output=True, text=True, timeout=30, check=True)
    assert listed.stdout.split() == [f"backend.log.{day:%Y%m%d}"]
    with tarfile.open(archive) as tar:
        member = tar.extractfile(f"backend.log.{day:%Y%m%d}")
        assert member is not None
        archived = member.read().decode()
    assert archived.count(before) == 5
    assert "starting Ultra AI sample backend" in archived
    assert not (log_dir / f"backend.log.{day:%Y%m%d}").exists()  # verified, then removed

    # The backend still logs: its next line starts a new backend.log in the same folder.
    after = uuid.uuid4().hex
    assert httpx.get(f"http://127.0.0.1:{env.ports['backend']}/health?probe={after}", timeout=5).status_code == 200
    assert logged(backend_log, after), "the backend stopped logging after the rotation"
    assert before not in backend_log.read_text()
