"""The hosts tier: environments on machines of their own, reached over SSH. Each test gets a fleet
of its own (network, hosts with their own Docker engines, SSH key, known_hosts), removed after
it, also when it fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ultra_ops_tests.support.docker import docker_unavailable
from ultra_ops_tests.support.hosts import HostFleet, TestHost


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[HostFleet]:
    reason = docker_unavailable()
    if reason:
        pytest.skip(f"Docker cannot run here: {reason}")
    hosts = HostFleet(tmp_path / "hosts")
    try:
        yield hosts
    finally:
        hosts.remove()


@pytest.fixture
def host(fleet: HostFleet, request: pytest.FixtureRequest) -> TestHost:
    """One host answering ssh, its key in the fleet's known_hosts; with the test's (or module's)
    `@pytest.mark.host_images(IMAGE, ...)`, those images already in its engine."""
    marker = request.node.get_closest_marker("host_images")
    return fleet.add(images=tuple(marker.args) if marker else ())[0]
