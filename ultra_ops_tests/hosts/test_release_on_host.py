"""A compose environment on a host of its own, through the CLI an operator uses, the commands as for
a local one: init (the stores started on the host, the database made through a tunnel), deploy
(the backend built here from the release's commit and streamed to the host), verify (health, the
database, Redis, endpoints and docker stats on the host, through tunnels to the host's loopback),
the maintenance jobs (status, vacuum, cache, the backend's logs archived here), a second deploy, a
rollback (the first release's image, already on the host: nothing built or sent), stop, recover and
status. Every command closes the tunnels it opened: no ssh to the host is left running after it."""

from __future__ import annotations

import json
import shutil
import tarfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest

from ultra_ops.cli import main
from ultra_ops.demo_calendar import plan_release
from ultra_ops.engine.hosts.tunnel import Tunnel
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.docker import ComposeEnvironment, Registry, compose_environment, docker
from ultra_ops_tests.support.hosts import TestHost, host_table, ssh_clients_to

pytestmark = pytest.mark.docker

STORES = ("ultra-local/postgres:15", "ultra-local/redis:7")


@pytest.fixture
def hosted(tmp_path: Path, dagster_home: Path, host: TestHost) -> Iterator[ComposeEnvironment]:
    """Staging of the local compose config, moved onto `host` (its stores' images loaded there)."""
    for image in STORES:
        host.load_image(image)
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


def image_id(tag: str) -> str:
    done = docker("image", "inspect", "--format", "{{.Id}}", tag)
    return done.stdout.strip() if done.returncode == 0 else ""


def host_image_id(host: TestHost, tag: str) -> str:
    done = host.ssh("docker", "image", "inspect", "--format", "{{.Id}}", tag)
    return done.stdout.strip() if done.returncode == 0 else ""


def running(host: TestHost, project: str) -> list[str]:
    ps = host.ssh("docker", "ps", "--filter", f"label=com.docker.compose.project={project}", "--format", "{{.Names}}")
    return sorted(name.split("_")[-2] for name in ps.stdout.split())


def backend_version(host: TestHost, port: int) -> str:
    """The backend's answer on the host's loopback (it publishes nowhere else), through a tunnel of
    the test's own."""
    with Tunnel(host.remote(), port) as tunnel:
        return httpx.get(f"http://127.0.0.1:{tunnel.local_port}/health", timeout=10).json()["version"]


def test_release_cycle_on_a_host(
    hosted: ComposeEnvironment, host: TestHost, capsys: pytest.CaptureFixture[str]
) -> None:
    env = hosted
    code, out = ops(capsys, env, host, "init")
    assert code == 0, out
    assert "created database" not in out or "ultra_staging" in out
    assert running(host, env.project) == ["postgres", "redis"], "the stores run on the host, not here"
    assert not docker("ps", "-q", "--filter", f"label=com.docker.compose.project={env.project}").stdout.strip()
    first, second = release(env, capsys, 1), release(env, capsys, 2)

    code, out = ops(capsys, env, host, "deploy", "--tag", first)
    assert code == 0, out
    backend = f"ultra-ai/backend:{first}"
    assert f"compose build {env.project} at {first} from" in out  # built here, from the release's commit
    assert f"sending {backend}" in out and "docker save | ssh docker load" in out
    assert image_id(backend) and host_image_id(host, backend) == image_id(backend)
    assert running(host, env.project) == ["backend", "postgres", "redis"]
    assert backend_version(host, env.ports["backend"]) == first

    code, out = ops(capsys, env, host, "verify", "--json")
    assert code == 0, out
    report = json.loads(out[out.index("{") : out.rindex("}") + 1])
    # Each kind reached the host's loopback through a tunnel: health and the endpoints (the backend),
    # the database probes, Redis, the endpoints' latency.
    passed = {r["kind"] for r in report["results"] if r["ok"] and not r["skipped"]}
    assert {"health", "database", "redis", "endpoint", "latency", "resources"} <= passed, report["results"]
    [host_disk] = [r for r in report["results"] if r["name"] == "disk host"]  # df on the host
    assert host_disk["ok"] and f"free at /srv/ultra-ops/staging on {host.address}" in host_disk["detail"]
    resources = {r["name"]: r["metrics"] for r in report["results"] if r["kind"] == "resources"}
    # docker stats ran on the host: its containers, with their memory.
    assert set(resources) == {f"resources {env.container(s)}" for s in ("backend", "postgres", "redis")}
    assert all(m["memory_mb"] > 0 for m in resources.values())

    code, out = ops(capsys, env, host, "maintenance", "status")
    assert code == 0, out
    lines = {
        line.split()[0]: line for line in out.splitlines() if line.split()[:1] in (["backend"], ["postgres"], ["redis"])
    }
    assert set(lines) == {"backend", "postgres", "redis"}
    assert backend in lines["backend"] and "(healthy)" in lines["postgres"]
    code, out = ops(capsys, env, host, "maintenance", "vacuum")
    assert code == 0, out
    code, out = ops(capsys, env, host, "maintenance", "cache-stats")
    assert code == 0, out
    assert json.loads(out[out.index("{") : out.rindex("}") + 1])["used_memory"] > 0
    code, out = ops(capsys, env, host, "maintenance", "cache-clear", "--pattern", "nothing-here:*")
    assert code == 0, out

    # The backend's log is on the host, in its volume: rotated there, streamed here, archived here
    # (verified), and only then removed there.
    in_backend = ["docker", "exec", env.container("backend")]
    logged = host.ssh(*in_backend, "cat", "/app/logs/backend.log").stdout
    assert logged.count("\n") > 3
    day = date.today()
    code, out = ops(capsys, env, host, "maintenance", "archive-logs", "--day", day.isoformat())
    assert code == 0, out
    assert f"fetched 1 log files of {day} from staging's host" in out
    archive = load_settings(env.config).environment("staging").log_dir / "archive" / f"logs_{day:%Y%m%d}.tar.gz"
    with tarfile.open(archive) as tar:
        assert tar.getnames() == [f"backend.log.{day:%Y%m%d}"]
        member = tar.extractfile(tar.getmembers()[0])
        assert member is not None
        assert member.read().decode().startswith(logged)
    assert host.ssh(*in_backend, "ls", "/app/logs").stdout.split() in ([], ["backend.log"])

    code, out = ops(capsys, env, host, "deploy", "--tag", second)
    assert code == 0, out
    if image_id(f"ultra-ai/backend:{second}") == image_id(backend):
        # The same build (no change to the backend between the two releases): only tagged there.
        assert f"ultra-ai/backend:{second} ({image_id(backend)[7:19]}) is on staging's host" in out
        assert "tagged there, not sent" in out and f"sending ultra-ai/backend:{second}" not in out
    else:
        assert f"sending ultra-ai/backend:{second}" in out
    assert host_image_id(host, f"ultra-ai/backend:{second}") == image_id(f"ultra-ai/backend:{second}")
    assert backend_version(host, env.ports["backend"]) == second
    assert host_image_id(host, backend) == image_id(backend), "the first release's image stays on the host"

    # A rollback runs the restored release's image, which the host has: nothing built, nothing sent.
    code, out = ops(capsys, env, host, "rollback", "--yes")
    assert code == 0, out
    assert "compose build" not in out and "sending" not in out
    assert f"{backend} is on staging's host deploy@{host.address}:22 already" in out
    assert backend_version(host, env.ports["backend"]) == first

    code, out = ops(capsys, env, host, "stop")
    assert code == 0, out
    assert running(host, env.project) == ["postgres", "redis"]  # the stores keep running
    code, out = ops(capsys, env, host, "recover")
    assert code == 0, out
    code, out = ops(capsys, env, host, "status")
    assert code == 0, out
    assert f"host         deploy@{host.address}:22 answers" in out
    services = {line.split()[1]: line.split()[2] for line in out.splitlines() if line.startswith("service")}
    assert services == {"backend": "stopped", "postgres": "running", "redis": "running"}

    # The host cut: a job fails within the connect timeout, naming the host, and leaves no ssh.
    host.cut()
    try:
        started = time.monotonic()
        code, out = ops(capsys, env, host, "maintenance", "vacuum")
        assert code == 1 and time.monotonic() - started < 30, out
        assert f"staging's host deploy@{host.address}:22: no answer within 5 s" in out
    finally:
        host.restore()


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
        assert host_image_id(host, pushed) == image_id(pushed)
        running_image = host.ssh("docker", "inspect", "--format", "{{.Config.Image}}", env.container("backend"))
        assert running_image.stdout.strip() == pushed
        assert backend_version(host, env.ports["backend"]) == version
    finally:
        registry.stop()
