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
    """The files under the environment's folder on the host, each with its sha256 (a folder's time
    changes with a temporary file made and removed in it; its files must not)."""
    return host.exec("sh", "-c", f"find {root} -type f 2>/dev/null | sort | xargs -r sha256sum").stdout


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


def test_a_full_disk_on_the_host(shared_host: TestHost, tmp_path: Path, dagster_home: Path) -> None:
    """The host's folder for the environment on a full file system: the env file's upload and the
    state writes fail with one line naming the host, the folder and the full disk, the old files
    as they were and nothing half written left; with space back the same command goes through."""
    host = shared_host
    # One application service (never started): `stop` then runs compose on the host, files first.
    config = host_config(tmp_path, host, compose='version: "3.8"\nservices:\n  app:\n    image: busybox\n')
    root = "/srv/ultra-ops/staging"
    env = _cli_env(dagster_home)
    mounted = False
    try:
        assert host.exec("sh", "-c", f"mkdir -p {root} && mount -t tmpfs -o size=256k tmpfs {root}").returncode == 0
        mounted = True
        assert host.exec("chown", "deploy:deploy", root).returncode == 0
        first = run_cli("stop", config=config, environment="staging", env=env, timeout=60)
        assert first.returncode == 0, first.stdout + first.stderr
        old = host.exec("cat", f"{root}/.env.staging").stdout
        assert old == "ULTRA_VERSION=v1.0.0\n"

        local_env = tmp_path / "root" / ".env.staging"
        local_env.write_text(old + "ULTRA_LOG_LEVEL=debug\n")
        # Full: the lock's record is not written. One page free: the lock is taken (its record
        # fits) and the env file's upload fails.
        for free_pages, folder, left in (
            (0, f"{root}/state", "the lock was not taken"),
            (1, root, ".env.staging not written"),
        ):
            pages = f"$(df -Pk {root} | awk 'NR==2 {{print int($4/4) - {free_pages}}}')"
            fill = f"dd if=/dev/zero of={root}/fill bs=4k count={pages} 2>/dev/null; sync"
            host.exec("sh", "-c", fill)
            before = _host_files(host, root)
            started = time.monotonic()
            full = run_cli("stop", config=config, environment="staging", env=env, timeout=60)
            said = full.stdout + full.stderr
            assert full.returncode == 1 and time.monotonic() - started < 20, said
            errors = [line for line in said.splitlines() if line.startswith("error")]
            assert len(errors) == 1, said
            assert f"staging's host deploy@{host.address}:22: no space left on the disk of {folder} (" in errors[0]
            assert left in errors[0], said
            assert "Traceback" not in said
            assert host.exec("cat", f"{root}/.env.staging").stdout == old
            assert _host_files(host, root) == before  # nothing half written left, no temporary file
            assert not ssh_clients_to(host.address)
            host.exec("rm", "-f", f"{root}/fill")

        again = run_cli("stop", config=config, environment="staging", env=env, timeout=60)
        assert again.returncode == 0, again.stdout + again.stderr
        assert host.exec("cat", f"{root}/.env.staging").stdout == local_env.read_text()
    finally:
        if mounted:
            host.exec("umount", "-l", root)
