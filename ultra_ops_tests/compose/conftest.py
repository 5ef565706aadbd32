"""The Docker tier: real dockerd, real containers. Each test gets a compose environment of its own
(project name, ports, volumes, folders, DAGSTER_HOME), removed after it, also when it fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ultra_ops_tests.support.docker import ComposeEnvironment, compose_environment, docker_unavailable


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
