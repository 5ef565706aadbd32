"""The test hosts themselves: what every hosts test relies on, checked once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from ultra_ops_tests.support.hosts import FLEET_LABEL, HostFleet, TestHost, docker

pytestmark = pytest.mark.docker


def test_two_hosts_answer_ssh_with_their_own_keys_and_engines(fleet: HostFleet) -> None:
    one, two = fleet.add(2)
    assert one.address != two.address
    assert one.host_key() != two.host_key(), "each host makes its own host key"
    for h in (one, two):
        proc = h.ssh("hostname")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == h.container
        # The deploy user reaches the engine through the docker group, as on a server.
        engine = h.ssh("docker", "info", "--format", "{{.Driver}}", user="deploy")
        assert engine.returncode == 0, engine.stderr
        assert engine.stdout.strip() == "overlay2", "without its volume the inner engine falls back to vfs"
    known = fleet.known_hosts.read_text().splitlines()
    assert sorted(line.split()[0] for line in known) == sorted([one.address, two.address])


def test_no_password_login(host: TestHost) -> None:
    proc = subprocess.run(
        [*host.ssh_argv()[:-1], "-o", "PreferredAuthentications=password", f"root@{host.address}", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 255
    assert "Permission denied (publickey)" in proc.stderr, "the server offers keys alone"


def test_a_loaded_image_runs_in_the_hosts_engine(host: TestHost) -> None:
    host.load_image("ultra-local/python:3.11")
    proc = host.ssh("docker", "run", "--rm", "ultra-local/python:3.11", "python3", "-c", "'print(6 * 7)'")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "42"


def test_cut_and_restore(host: TestHost) -> None:
    host.cut()
    started = time.monotonic()
    proc = host.ssh("true", timeout=30)
    assert proc.returncode == 255, "a cut host does not answer"
    assert time.monotonic() - started < 10
    host.restore()
    assert host.ssh("true").returncode == 0


def test_remove_leaves_nothing(tmp_path: Path) -> None:
    from ultra_ops_tests.support.docker import docker_unavailable

    if docker_unavailable():
        pytest.skip(f"Docker cannot run here: {docker_unavailable()}")
    fleet = HostFleet(tmp_path / "hosts")
    try:
        fleet.add()
    finally:
        fleet.remove()
    label = f"label={fleet.label}"
    assert docker("ps", "-aq", "--filter", label).stdout.split() == []
    assert docker("volume", "ls", "-q", "--filter", label).stdout.split() == []
    assert docker("network", "ls", "-q", "--filter", label).stdout.split() == []


def test_a_killed_tests_hosts_are_removed_by_the_next_fleet(tmp_path: Path) -> None:
    from ultra_ops_tests.support.docker import docker_unavailable

    if docker_unavailable():
        pytest.skip(f"Docker cannot run here: {docker_unavailable()}")
    script = (
        "import sys, time; from pathlib import Path; from ultra_ops_tests.support.hosts import HostFleet\n"
        "f = HostFleet(Path(sys.argv[1])); f.add(); print(f.id, flush=True); time.sleep(600)"
    )
    argv = [sys.executable, "-c", script, str(tmp_path / "killed")]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        fleet_id = child.stdout.readline().strip()
    finally:
        child.kill()
        child.wait()
    label = f"label=org.ultra-ops.test-hosts={fleet_id}"
    assert docker("ps", "-aq", "--filter", label).stdout.split(), "the killed test left its host"
    HostFleet(tmp_path / "next").remove()
    for kind in (["ps", "-aq"], ["volume", "ls", "-q"], ["network", "ls", "-q"]):
        assert docker(*kind, "--filter", label).stdout.split() == [], kind


def test_hosts_started_with_images_have_them_in_engines_of_their_own(fleet: HostFleet) -> None:
    """`add(images=...)`: each host's engine (overlay2 on its own volume) has the images as this
    machine has them, runs them, and what one host's engine makes the other's does not have."""
    from ultra_ops_tests.support.host_seeds import SEED_LABEL, seed_volume

    images = ("ultra-local/postgres:15", "ultra-local/redis:7")
    one, two = fleet.add(2, images=images)
    assert one.volume != two.volume
    for h in (one, two):
        assert h.ssh("docker", "info", "--format", "{{.Driver}}").stdout.strip() == "overlay2"
        for image in images:
            here = docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
            there = h.ssh("docker", "image", "inspect", "--format", "{{.Id}}", image)
            assert there.returncode == 0 and there.stdout.strip() == here, there.stderr
    ran = one.ssh("docker", "run", "--name", "only-here", "ultra-local/redis:7", "redis-server", "--version")
    assert ran.returncode == 0 and "Redis server" in ran.stdout, ran.stderr
    assert one.ssh("docker", "ps", "-aq", "--filter", "name=only-here").stdout.strip()
    assert not two.ssh("docker", "ps", "-aq", "--filter", "name=only-here").stdout.strip()
    # The hosts' volumes are the fleet's (removed with it); the seed is not one of them.
    label = f"label={fleet.label}"
    assert sorted(docker("volume", "ls", "-q", "--filter", label).stdout.split()) == sorted([one.volume, two.volume])
    seed = seed_volume(fleet.image, images)
    assert seed in docker("volume", "ls", "-q", "--filter", f"label={SEED_LABEL}").stdout.split()
    assert docker("volume", "inspect", "--format", '{{index .Labels "' + FLEET_LABEL + '"}}', seed).stdout.strip() == ""
