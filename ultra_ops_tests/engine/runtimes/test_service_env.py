"""A service gets its env file and a fixed allowlist of ours, never a value from the operator's shell
for a key its env file is meant to hold: the sample service as a real process, and docker-compose's
interpolation of a real compose file."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import httpx
import pytest

from ultra_ops.engine.release.migrate import apply_migrations
from ultra_ops.engine.runtimes.compose import ComposeRuntime
from ultra_ops.engine.runtimes.process import ProcessRuntime
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.configs import write_config

SHELL_PASSWORD = "shell-Pass-0f9e8d7c"
# The shipped config's login smoke step: it names ULTRA_AUTH_PASSWORD, which is how a value of the
# operator's reached the service (the variables a config names were passed on to every child).
SMOKE = """
[environments.staging.verify.smoke.release]
base_url = "http://127.0.0.1:1"
[[environments.staging.verify.smoke.release.steps]]
name = "log in"
method = "POST"
path = "/api/v1/auth/login"
json = { username = "admin", password = "{env:ULTRA_AUTH_PASSWORD}" }
only_if_env = "ULTRA_AUTH_PASSWORD"
"""


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode()
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def test_a_service_does_not_inherit_the_shells_value_of_a_key_its_env_file_lacks(
    tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ULTRA_AUTH_PASSWORD", SHELL_PASSWORD)
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/operator-agent.sock")
    monkeypatch.setenv("HTTPS_PROXY", "http://op:proxy-Pass-1@proxy.example:3128")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    env = load_settings(write_config(tmp_path, pg_database, verify_extra=SMOKE)).environment("staging")
    assert "ULTRA_AUTH_PASSWORD" in env.secret_env_names()
    apply_migrations(env)
    env.env_file.write_text("ULTRA_FEATURE_FLAGS=search\n")  # no ULTRA_AUTH_PASSWORD: authentication off
    runtime = ProcessRuntime(env)
    try:
        runtime.up("v1.0.0")
        runtime.wait_healthy(20)
        pid = json.loads((runtime.run_dir / "backend.pid").read_text())["pid"]
        seen = _environ(pid)
        port = env.processes[0].port
        answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/prompts", timeout=5)
    finally:
        runtime.down()
    assert "ULTRA_AUTH_PASSWORD" not in seen and SHELL_PASSWORD not in repr(seen)
    assert answer.status_code == 200  # authentication is off, as the env file says
    assert "SSH_AUTH_SOCK" not in seen and "HTTPS_PROXY" not in seen  # not on the allowlist
    assert seen["PATH"] == os.environ["PATH"] and seen["LC_ALL"] == "C.UTF-8"  # on it
    assert seen["ULTRA_FEATURE_FLAGS"] == "search" and seen["ULTRA_VERSION"] == "v1.0.0"


@pytest.mark.unit
@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not on PATH")
def test_compose_interpolates_from_the_env_file_not_from_the_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ULTRA_AUTH_PASSWORD", SHELL_PASSWORD)
    monkeypatch.setenv("TZ", "UTC")
    root = tmp_path / "root"
    root.mkdir()
    (root / ".env.staging").write_text("TZ=Europe/Paris\n")
    compose_file = root / "compose.yml"
    compose_file.write_text(
        textwrap.dedent("""
        services:
          app:
            image: busybox
            environment:
              ULTRA_AUTH_PASSWORD: ${ULTRA_AUTH_PASSWORD:-unset}
              TZ: ${TZ:-none}
        """)
    )
    config = tmp_path / "ultra_ops.toml"
    config.write_text(
        textwrap.dedent(f"""
        [environments.staging]
        runtime = "compose"
        root = "{root}"
        compose_file = "{compose_file}"
        compose_command = ["docker-compose"]
        state_dir = "{tmp_path / "state"}"
        [environments.staging.database]
        name = "ultra"
        {SMOKE}""")
    )
    env = load_settings(config).environment("staging")
    assert "ULTRA_AUTH_PASSWORD" in env.secret_env_names()
    resolved = ComposeRuntime(env).config("v1.0.0")
    assert "ULTRA_AUTH_PASSWORD: unset" in resolved, resolved
    assert "TZ: Europe/Paris" in resolved, resolved  # a basic key the env file sets: the env file's
