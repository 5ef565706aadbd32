"""Faults of an environment's host, seen as an operator sees them (the CLI in a process of its own):
the connection refused, a wrong key, a changed host key, a full disk on the host, the network cut
in the middle of a deploy and of a rollback, the host's Docker engine restarted in the middle of a
deploy. Each fails at once with one line naming the host and what to do, changes nothing it did not
say it changed, shows no secret, and leaves an environment that `recover` or the next operation
brings back to a served, consistent state.

One fleet for the module (each host takes seconds to start and the deployed environment a minute to
make): every test puts its host back as it found it, also when it fails."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ultra_ops.demo_calendar import plan_release
from ultra_ops.engine.backups.store import list_backups
from ultra_ops.engine.crash_points import PAUSE_ENV
from ultra_ops.engine.deployed import deployed_version
from ultra_ops.engine.envfile import read_env_file
from ultra_ops.engine.hosts.tunnel import Tunnel
from ultra_ops.engine.release.records import ReleaseStatus, find_releases
from ultra_ops.engine.settings import Environment, load_settings
from ultra_ops_tests.support.cli import run_cli, start_cli, wait_for_pause
from ultra_ops_tests.support.docker import ComposeEnvironment, compose_environment, docker_unavailable
from ultra_ops_tests.support.hosts import HostFleet, TestHost, host_config, host_table, make_key, ssh_clients_to

pytestmark = pytest.mark.docker

STORES = ("ultra-local/postgres:15", "ultra-local/redis:7")


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
    """The module's host, the stores' images in its engine from its start (for `deployed`)."""
    return shared_fleet.add(images=STORES)[0]


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
    made = host.exec("test", "-e", root).returncode != 0
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
        # The host as it was: the folder the deploy user makes on first use, not one of root's.
        if mounted:
            host.exec("umount", "-l", root)
        if made:
            host.exec("rmdir", root)


# -- a deployed environment on its host: the cuts and the engine restart --------------------------


@dataclass
class Deployed:
    """Staging of the local compose config on `host`, deployed at its first release; CLI calls with
    the module's own Dagster home."""

    env: ComposeEnvironment
    host: TestHost
    home: Path
    # The version consistent() found, while no command has run since: what the next test starts from.
    checked: str | None = None

    def cli(self, *argv: str, timeout: float = 400, **env: str) -> tuple[int, str]:
        self.checked = None
        proc = run_cli(
            *argv,
            config=self.env.config,
            environment=self.env.environment,
            env={**_cli_env(self.home), **env},
            timeout=timeout,
        )
        return proc.returncode, proc.stdout + proc.stderr

    def start(self, *argv: str, **env: str) -> subprocess.Popen:
        self.checked = None
        return start_cli(
            *argv, config=self.env.config, environment=self.env.environment, env={**_cli_env(self.home), **env}
        )

    def release(self, minor: int) -> str:
        version = self.env.version(minor)
        plan_release(self.env.repo, version)
        code, out = run_cli_plain(self, "release-branch", "--tag", version)
        assert code == 0, out
        self.env.versions.append(version)
        return version

    @property
    def environment(self) -> Environment:
        return load_settings(self.env.config).environment(self.env.environment)

    def serves(self) -> str:
        """The version the backend answers with, on the host's loopback through a tunnel of the test's."""
        with Tunnel(self.host.remote(), self.env.ports["backend"]) as tunnel:
            return httpx.get(f"http://127.0.0.1:{tunnel.local_port}/health", timeout=10).json()["version"]

    def running(self) -> list[str]:
        ps = self.host.ssh(
            "docker", "ps", "--filter", f"label=com.docker.compose.project={self.env.project}", "--format", "{{.Names}}"
        )
        return sorted(name.split("_")[-2] for name in ps.stdout.split())

    def secrets(self) -> list[str]:
        """The passwords of the environment's env file: never in output, logs or records."""
        values = read_env_file(self.environment.env_file)
        return [v for k, v in values.items() if "PASSWORD" in k and len(v) >= 8]

    def secretless(self, text: str) -> None:
        _secretless(text, self.host.identity)
        for secret in self.secrets():
            assert secret not in text

    def consistent(self) -> str:
        """The environment serves one version whole: the backend's answer, the env file's version
        and a verify that passes (its database probes read the database that version migrated)."""
        version = deployed_version(self.environment)
        assert version is not None and self.serves() == version
        code, out = self.cli("verify")
        assert code == 0, out
        self.checked = version
        return version

    def found_consistent(self) -> str:
        """consistent(), unless it passed last and no command ran since (the previous test ended
        with it): the version the environment serves whole, as a test starts from it."""
        return self.checked or self.consistent()


def run_cli_plain(d: Deployed, *argv: str) -> tuple[int, str]:
    """A command without --environment (release-branch)."""
    proc = run_cli(*argv, config=d.env.config, env=_cli_env(d.home), timeout=240)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def deployed(shared_host: TestHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    folder = tmp_path_factory.mktemp("deployed")
    home = folder / "dagster_home"
    home.mkdir()
    env = compose_environment(folder, host=host_table(shared_host))
    d = Deployed(env, shared_host, home)
    try:
        code, out = d.cli("init")
        assert code == 0, out
        first = d.release(1)
        code, out = d.cli("deploy", "--tag", first)
        assert code == 0, out
        yield d
    finally:
        env.remove()


def _cut_at(d: Deployed, point: str, tmp_path: Path, *argv: str) -> tuple[int, str, float]:
    """Start `ultra-ops ARGV`, cut the host's network when it reaches `point`, let it go on: its
    exit code, output and how long after the cut it ended."""
    reached = tmp_path / "reached"
    proc = d.start(*argv, **{PAUSE_ENV: f"{point}={reached}"})
    cut = False
    try:
        wait_for_pause(proc, reached, point, timeout=400)
        d.host.cut()
        cut = True
        cut_at = time.monotonic()
        reached.unlink()
        out, err = proc.communicate(timeout=120)
        return proc.returncode, out + err, time.monotonic() - cut_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if cut:
            d.host.restore()


def _wait_answers(host: TestHost, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while host.remote().probe().answers is False:
        assert time.monotonic() < deadline, "the host does not answer after its network came back"
        time.sleep(0.5)


def test_a_network_cut_in_the_middle_of_a_deploy(deployed: Deployed, tmp_path: Path) -> None:
    d = deployed
    old = d.found_consistent()
    new = d.release(2)
    code, said, after_cut = _cut_at(d, "step:deploy_up", tmp_path, "deploy", "--tag", new)
    assert code == 1, said
    assert after_cut < 10, f"ended {after_cut:.1f} s after the cut: {said}"
    error = _one_error(said)
    assert f"staging's host deploy@{d.host.address}:22: deploy of {new} to staging" in error
    assert "stopped at its up step" in error and "not rolled back" in error, error
    assert "as far as known the host runs" in error and "`ultra-ops recover --environment staging`" in error
    d.secretless(said)
    [record] = find_releases(d.environment, version=new, limit=1)
    assert record.status in (ReleaseStatus.FAILED, ReleaseStatus.INTERRUPTED), record
    d.secretless(json.dumps(dataclasses.asdict(record), default=str))

    _wait_answers(d.host)
    code, out = d.cli("recover")
    assert code == 0, out
    assert f"rolled back the deploy of {new}" in out, out
    assert d.consistent() == old
    # The release history says so: a rollback to the deploy's backup, the one that deploy owed.
    [rolled] = find_releases(d.environment, operation="rollback", limit=1)
    assert (rolled.status, rolled.backup_id, rolled.version) == (ReleaseStatus.ROLLED_BACK, record.backup_id, old)
    assert record.backup_id and f"the owed rollback of deploy {record.run_id} ({new})" in (rolled.reason or "")
    assert rolled.run_id not in (None, record.run_id), rolled
    d.secretless(json.dumps(dataclasses.asdict(rolled), default=str))
    code, out = d.cli("deploy", "--tag", new)
    assert code == 0, out
    assert d.consistent() == new


def _one_error(said: str) -> str:
    errors = [line for line in said.splitlines() if line.startswith("error")]
    assert len(errors) == 1, said
    assert "Traceback" not in said
    return errors[0]


def test_a_network_cut_in_a_rollback_with_the_services_down(deployed: Deployed, tmp_path: Path) -> None:
    """Cut once the rollback stopped the services (its one step's `stopped:backend`), before its swap:
    it fails within 10 s saying the state it left and what to run; recover then brings the
    environment back to a served one."""
    d = deployed
    before = d.found_consistent()
    code, out = d.cli("backups", "create")
    assert code == 0, out
    kept = list_backups(d.environment)[0]
    assert kept.version == before
    code, said, after_cut = _cut_at(d, "stopped:backend", tmp_path, "rollback", "--backup", kept.id, "--yes")
    assert code == 1, said
    assert after_cut < 10, f"ended {after_cut:.1f} s after the cut: {said}"
    error = _one_error(said)
    assert f"staging's host deploy@{d.host.address}:22" in error, said
    assert "`ultra-ops recover --environment staging`" in error, said
    d.secretless(said)

    _wait_answers(d.host)
    code, out = d.cli("recover")
    assert code == 0, out
    assert d.consistent() == before  # the state in place: the swap undone, or the backup of that same version
    code, out = d.cli("rollback", "--backup", kept.id, "--yes")
    assert code == 0, out
    assert d.consistent() == before


def test_the_hosts_docker_engine_restarted_in_the_middle_of_a_deploy(deployed: Deployed, tmp_path: Path) -> None:
    """dockerd on the host stopped at the deploy's up step and started again: the deploy fails naming
    the host's engine; the containers (restart: unless-stopped) come back with the engine; recover
    puts the environment back and the next deploy goes through."""
    d = deployed
    d.found_consistent()
    new = d.release(3)
    reached = tmp_path / "reached"
    proc = d.start("deploy", "--tag", new, **{PAUSE_ENV: f"step:deploy_up={reached}"})
    try:
        wait_for_pause(proc, reached, "step:deploy_up", timeout=400)
        stopped = d.host.exec("sh", "-c", "kill $(pidof dockerd); while pidof dockerd >/dev/null; do sleep 0.1; done")
        assert stopped.returncode == 0, stopped.stderr
        reached.unlink()
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        started = d.host.exec("start-dockerd")
    said = out + err
    assert started.returncode == 0, started.stderr
    assert proc.returncode == 1, said
    error = _one_error(said)
    assert f"staging's host deploy@{d.host.address}:22: " in error and "its Docker engine does not answer" in error
    assert "`ultra-ops recover --environment staging`" in error, said
    d.secretless(said)

    deadline = time.monotonic() + 90
    while d.running() != ["backend", "postgres", "redis"]:
        assert time.monotonic() < deadline, f"the containers did not come back with the engine: {d.running()}"
        time.sleep(0.5)
    code, out = d.cli("recover")
    assert code == 0, out
    d.consistent()
    code, out = d.cli("deploy", "--tag", new)
    assert code == 0, out
    assert d.consistent() == new
