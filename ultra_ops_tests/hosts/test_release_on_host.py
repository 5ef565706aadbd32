"""A compose environment on a host of its own, deployed through a registry: the image pushed here
and pulled on the host, a registry on this machine's loopback reached through a reverse tunnel.

The hosted environment's whole cycle through the CLI (init, deploy streaming the image, verify,
the maintenance jobs, a second deploy, the rollback, stop, recover, status and a cut host) is
staging's in test_release_across_hosts.py: one scenario for both, each deploy over ssh costing
tens of seconds."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ultra_ops.cli import main
from ultra_ops.demo_calendar import plan_release
from ultra_ops_tests.support.docker import ComposeEnvironment, Registry, compose_environment, image_id
from ultra_ops_tests.support.hosts import TestHost, host_table, ssh_clients_to

STORES = ("ultra-local/postgres:15", "ultra-local/redis:7")

pytestmark = [pytest.mark.docker, pytest.mark.host_images(*STORES)]


@pytest.fixture
def hosted(tmp_path: Path, dagster_home: Path, host: TestHost) -> Iterator[ComposeEnvironment]:
    """Staging of the local compose config, moved onto `host` (its stores' images there from its start)."""
    env = compose_environment(tmp_path, host=host_table(host))
    try:
        yield env
    finally:
        env.remove()


def ops(capsys: pytest.CaptureFixture[str], env: ComposeEnvironment, host: TestHost, *argv: str) -> tuple[int, str]:
    code = main([*argv, "--environment", env.environment, "--config", str(env.config)])
    captured = capsys.readouterr()
    left = ssh_clients_to(host.address)
    assert not left, f"`ultra-ops {argv[0]}` left ssh running: {left}"
    return code, captured.out + captured.err


def release(env: ComposeEnvironment, capsys: pytest.CaptureFixture[str], minor: int) -> str:
    version = env.version(minor)
    plan_release(env.repo, version)
    assert main(["release-branch", "--tag", version, "--config", str(env.config)]) == 0, capsys.readouterr()
    env.versions.append(version)
    return version


def test_deploy_through_a_registry_on_this_machine(
    hosted: ComposeEnvironment, host: TestHost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --registry the image is pushed here and pulled on the host; a registry on this
    machine's loopback reaches the host through a reverse tunnel, at the same address there."""
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (./dev test installs it as root with apt-get)")
    env = hosted
    registry = Registry(tmp_path / "registry").start()
    try:
        assert ops(capsys, env, host, "init")[0] == 0
        version = release(env, capsys, 1)
        code, out = ops(capsys, env, host, "deploy", "--tag", version, "--registry", registry.address)
        assert code == 0, out
        pushed = f"{registry.address}/ultra-ai/backend:{version}"
        assert f"pulling {pushed} on staging's host" in out and "through a reverse tunnel" in out
        assert "docker save" not in out
        assert host.image_id(pushed) == image_id(pushed)
        running_image = host.ssh("docker", "inspect", "--format", "{{.Config.Image}}", env.container("backend"))
        assert running_image.stdout.strip() == pushed
        assert host.served_version(env.ports["backend"]) == version
    finally:
        registry.stop()
