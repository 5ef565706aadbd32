"""The Docker tier: real dockerd, real containers. Each test gets a compose environment of its own
(project name, ports, volumes, folders, DAGSTER_HOME), removed after it, also when it fails."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ultra_ops_tests.support.docker import ComposeEnvironment, Registry, compose_environment, docker_unavailable


@pytest.fixture
def compose_env(tmp_path: Path, dagster_home: Path) -> Iterator[ComposeEnvironment]:
    reason = docker_unavailable()
    if reason:
        pytest.skip(f"Docker cannot run here: {reason}")
    env = compose_environment(tmp_path)
    try:
        yield env
    finally:
        env.remove()


@pytest.fixture
def registry(tmp_path: Path, compose_env: ComposeEnvironment) -> Iterator[Registry]:
    """A registry on loopback of the test's own; requested after compose_env, so it stops first."""
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (./dev test installs it as root with apt-get)")
    r = Registry(tmp_path / "registry")
    try:
        yield r.start()
    finally:
        r.stop()
