"""Faults of an environment's host, seen as an operator sees them (the CLI in a process of its own):
the connection refused, a wrong key, a changed host key, a full disk on the host, the network cut
in the middle of a deploy and of a rollback, the host's Docker engine restarted in the middle of a
deploy. Each fails at once with one line naming the host and what to do, changes nothing it did not
say it changed, shows no secret, and leaves an environment that `recover` or the next operation
brings back to a served, consistent state.

One fleet for the module (each host takes seconds to start and the deployed environment a minute to
make): every test puts its host back as it found it, also when it fails."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ultra_ops_tests.support.cli import run_cli
from ultra_ops_tests.support.docker import docker_unavailable
from ultra_ops_tests.support.hosts import HostFleet, TestHost, host_config, make_key, ssh_clients_to

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def shared_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostFleet]:
    reason = docker_unavailable()
    if reason:
        pytest.skip(f"Docker cannot run here: {reason}")
    hosts = HostFleet(tmp_path_factory.mktemp("hosts"))
    try:
        yield hosts
    finally:
        hosts.remove()


@pytest.fixture(scope="module")
def shared_host(shared_fleet: HostFleet) -> TestHost:
    return shared_fleet.add()[0]


def _cli_env(dagster_home: Path) -> dict[str, str]:
    return {**os.environ, "DAGSTER_HOME": str(dagster_home)}


def _host_files(host: TestHost, root: str) -> str:
    """What is under the environment's folder on the host: names, sizes and times."""
    return host.exec("sh", "-c", f"ls -laR --time-style=+%s {root} 2>&1 || true").stdout


def _secretless(text: str, key: Path) -> None:
    body = key.read_text().splitlines()[1]  # a line of the private key's base64
    assert body not in text and "PRIVATE KEY" not in text


@pytest.mark.parametrize("fault", ["refused", "wrong key", "changed host key"])
def test_the_cli_refused_by_the_host(fault: str, shared_host: TestHost, tmp_path: Path, dagster_home: Path) -> None:
    """deploy fails (exit 1) with one line naming the host and the fault, within the connect
    timeout, nothing changed on the host or here; status says the host does not answer and why,
    exit 0."""
    host = shared_host
    config = host_config(tmp_path, host)
    text = config.read_text()
    root = "/srv/ultra-ops/staging"
    before_host = _host_files(host, root)
    before_here = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    expected = {
        "refused": "connection refused on port 2222",
        "wrong key": "authentication failed: the host refused the key",
        "changed host key": "the host key has CHANGED",
    }[fault]
    if fault == "refused":
        config.write_text(text + "port = 2222\n")
    elif fault == "wrong key":
        other = make_key(tmp_path / "other-key")
        config.write_text(text.replace(str(host.identity), str(other)))
    else:
        host.regenerate_host_key()
    try:
        env = _cli_env(dagster_home)
        started = time.monotonic()
        deploy = run_cli("deploy", "--tag", "v1.0.0", config=config, environment="staging", env=env, timeout=60)
        elapsed = time.monotonic() - started
        said = deploy.stdout + deploy.stderr
        assert deploy.returncode == 1, said
        assert elapsed < 20, said
        where = f"staging's host deploy@{host.address}:{2222 if fault == 'refused' else 22}"
        errors = [line for line in said.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and where in errors[0] and expected in errors[0], said
        assert "Traceback" not in said
        _secretless(said, host.identity)

        status = run_cli("status", config=config, environment="staging", env=env, timeout=60)
        said = status.stdout + status.stderr
        assert status.returncode == 0, said
        assert expected in said and "does not answer" in said, said
        _secretless(said, host.identity)
        assert not ssh_clients_to(host.address)
    finally:
        if fault == "changed host key":
            host.fleet.trust(host)
    after_here = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert _host_files(host, root) == before_host
    made = set(after_here) - set(before_here)
    assert not {p for p in made if not p.startswith(("dagster_home", "other-key"))}, made
