"""The release document's shell commands, run as an operator runs them, against a real stack."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from ultra_ops.engine.backups.store import list_backups
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.configs import write_config
from ultra_ops_tests.support.ports import free_port
from ultra_ops_tests.support.services import REPO

SCRIPTS = REPO / "scripts"


def _run(script: str, *args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPTS / script), *args], env=env, capture_output=True, text=True, timeout=300, input=stdin
    )


def test_deploy_verify_rollback_scripts(tmp_path: Path, pg_database: str) -> None:
    port = free_port()
    config = write_config(tmp_path, pg_database, port=port)
    env_settings = load_settings(config).environment("staging")
    env_settings.env_file.write_text("ULTRA_VERSION=\n")
    env_settings.env_file.chmod(0o600)
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "ULTRA_OPS_CONFIG": str(config)}
    health = f"http://127.0.0.1:{port}/health"
    try:
        first = _run("deploy-mvp.sh", "--environment", "staging", "--tag", "v1.2.3", "--skip-tests", env=env)
        assert first.returncode == 0, first.stderr
        assert "deploy_backup" in first.stderr  # progress, step by step
        assert httpx.get(health).json()["version"] == "v1.2.3"
        second = _run("deploy-mvp.sh", "--environment", "staging", "--tag", "v1.2.4", "--skip-build", env=env)
        assert second.returncode == 0, second.stderr

        verify = _run("verify-deployment.sh", "--environment", "staging", "--json", env=env)
        assert verify.returncode == 0, verify.stderr
        assert '"environment": "staging"' in verify.stdout

        # The listing form: no --backup, no terminal and no --yes: list, then refuse to guess.
        listing = _run("rollback-mvp.sh", "--environment", "staging", env=env, stdin="")
        assert listing.returncode == 2 and "--yes" in listing.stderr
        newest = list_backups(env_settings)[0]
        assert newest.id in listing.stdout

        rollback = _run("rollback-mvp.sh", "--environment", "staging", "--backup", newest.id, env=env)
        assert rollback.returncode == 0, rollback.stderr
        assert httpx.get(health).json()["version"] == "v1.2.3"

        bad = _run("deploy-mvp.sh", "--environment", "staging", "--tag", "latest", env=env)
        assert bad.returncode == 2 and "release tag 'latest'" in bad.stderr
    finally:
        get_runtime(env_settings).down()


@pytest.mark.unit
def test_scripts_need_no_shell_interpolation_of_input() -> None:
    # The wrappers pass "$@" through untouched: nothing in them may build a command from input.
    for script in ("deploy-mvp.sh", "verify-deployment.sh", "rollback-mvp.sh"):
        text = (SCRIPTS / script).read_text()
        assert 'ultra-ops.sh" ' in text and '"$@"' in text and "eval" not in text
