"""The compose runtime driving an environment's host over SSH: its files copied there atomically,
compose run there with the release's variables, the services reached on the host's address."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from ultra_ops.engine.errors import RuntimeFailure
from ultra_ops.engine.hosts.ssh import HostUnreachable
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.hosts import TestHost, host_config

pytestmark = pytest.mark.docker

SECRET = "s3cret-Pa55word-not-for-logs"
COMPOSE = """\
version: "3.8"
services:
  web:
    image: ultra-local/python:3.11
    command: ["python3", "-m", "http.server", "8000"]
    environment:
      VERSION: ${ULTRA_IMAGE_TAG}
      WEB_PASSWORD: ${WEB_PASSWORD}
    ports: ["8000:8000"]
    stop_signal: SIGKILL
"""


@pytest.mark.host_images("ultra-local/python:3.11")
def test_up_status_and_down_on_the_host(host: TestHost, tmp_path: Path) -> None:
    config = host_config(tmp_path, host, compose=COMPOSE, env_file=f"ULTRA_VERSION=v1.0.0\nWEB_PASSWORD={SECRET}\n")
    env = load_settings(config).environment("staging")
    runtime = get_runtime(env)
    runtime.up("v1.0.0")
    remote_env = "/srv/ultra-ops/staging/.env.staging"
    assert host.exec("stat", "-c", "%a %U", remote_env).stdout.split() == ["600", "deploy"]
    assert host.exec("cat", remote_env).stdout == env.env_file.read_text()
    assert sorted(host.exec("ls", "-A", "/srv/ultra-ops/staging").stdout.split()) == [".env.staging", "compose.yml"]
    container = host.ssh("docker", "ps", "-q", "--filter", "label=com.docker.compose.service=web").stdout.strip()
    printenv = host.ssh("docker", "exec", container, "printenv", "VERSION", "WEB_PASSWORD").stdout.split()
    assert printenv == ["v1.0.0", SECRET], "the tag through `env`, the secret through the env file on the host"
    [web] = runtime.status()
    assert web.name == "web" and web.running
    # Published on the host's own address: reached from here as the environment's checks reach it.
    assert httpx.get(f"http://{host.address}:8000/", timeout=10).status_code == 200

    # A new release: the changed env file goes to the host before compose runs.
    env.env_file.write_text(f"ULTRA_VERSION=v1.0.1\nWEB_PASSWORD={SECRET}\n")
    runtime.up("v1.0.1")
    assert host.exec("cat", remote_env).stdout.startswith("ULTRA_VERSION=v1.0.1\n")
    container = host.ssh("docker", "ps", "-q", "--filter", "label=com.docker.compose.service=web").stdout.strip()
    assert host.ssh("docker", "exec", container, "printenv", "VERSION").stdout.strip() == "v1.0.1"

    runtime.down()
    assert not runtime.status()[0].running

    # The host cut: the runtime says so, as the SSH layer's typed error, within its connect timeout.
    host.cut()
    started = time.monotonic()
    with pytest.raises(HostUnreachable) as caught:
        runtime.up("v1.0.1")
    assert time.monotonic() - started < 10
    assert f"staging's host deploy@{host.address}:22: no answer within 5 s" in str(caught.value)
    host.restore()
    runtime.up("v1.0.1")
    assert runtime.status()[0].running


def test_a_failing_compose_command_names_the_host_and_no_secret(host: TestHost, tmp_path: Path) -> None:
    broken = COMPOSE.replace("ultra-local/python:3.11", "ultra-local/missing:1")
    config = host_config(tmp_path, host, compose=broken, env_file=f"WEB_PASSWORD={SECRET}\n")
    runtime = get_runtime(load_settings(config).environment("staging"))
    with pytest.raises(RuntimeFailure) as caught:
        runtime.up("v1.0.0")
    message = str(caught.value)
    assert f"compose up (uo-{host.fleet.id}) on staging's host deploy@{host.address}:22 failed" in message
    assert SECRET not in message
