"""One release through the promotion path with staging and production on hosts of their own:
development on this machine (the process runtime), staging on one host and production on another
(compose over SSH), all in one config and through the CLI an operator uses. Deploy and verify on
each, backups of the hosted environments kept here (nothing of them on either host), the
maintenance jobs on staging, a second release to staging rolled back from the backup kept here,
and `status` of all three naming their hosts.

What test_release_on_host.py proves of one hosted environment (stop, recover, a cut host, the
image only tagged when the host has it) is not repeated here: this test is about the three
environments side by side, each reached where it lives, and the backups kept off the hosts."""

from __future__ import annotations

import json
import re
import sys
import tarfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from ultra_ops.cli import main
from ultra_ops.demo_calendar import plan_release
from ultra_ops.engine.backups.store import DUMP_FILE, MANIFEST
from ultra_ops.engine.hosts.reach import Reach
from ultra_ops.engine.hosts.tunnel import Tunnel
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.settings import Settings, load_settings
from ultra_ops_tests.support.hosts import HostFleet, TestHost, ssh_clients_to, three_environment_config
from ultra_ops_tests.support.services import REDIS_URL

pytestmark = pytest.mark.docker

STORES = ("ultra-local/postgres:15", "ultra-local/redis:7")


@pytest.fixture
def three(
    tmp_path: Path, fleet: HostFleet, pg_database: str, redis_prefix: str, dagster_home: Path
) -> Iterator[dict[str, Any]]:
    """development here, staging on host 1, production on host 2; the hosts go with the fleet,
    development's service is stopped and the backend images built here removed after."""
    staging_host, production_host = fleet.add(2)
    fleet.load_images(*STORES)
    made = three_environment_config(
        tmp_path, staging_host, production_host, database=pg_database, redis_prefix=redis_prefix
    )
    made["hosts"] = {"staging": staging_host, "production": production_host}
    settings = load_settings(made["config"])
    made["settings"] = settings
    try:
        yield made
    finally:
        get_runtime(settings.environment("development")).down()
        made["staging"].remove()  # the backend tags built here (the hosts go with the fleet)
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=redis_prefix + "*"))
        if keys:
            client.delete(*keys)


def ops(capsys: pytest.CaptureFixture[str], three: dict[str, Any], environment: str, *argv: str) -> str:
    """`ultra-ops ARGV --environment ENVIRONMENT`, which must succeed and leave no ssh running to
    either host (every tunnel it opened closed); its output."""
    started = time.monotonic()
    code = main([*argv, "--environment", environment, "--config", str(three["config"])])
    print(f"{environment} {' '.join(argv)}: {time.monotonic() - started:.1f}s", file=sys.__stderr__, flush=True)
    captured = capsys.readouterr()
    said = captured.out + captured.err
    assert code == 0, f"ultra-ops {' '.join(argv)} on {environment} exited {code}:\n{said}"
    for host in three["hosts"].values():
        left = ssh_clients_to(host.address)
        assert not left, f"`ultra-ops {argv[0]}` on {environment} left ssh running: {left}"
    return said


def release(three: dict[str, Any], capsys: pytest.CaptureFixture[str], minor: int) -> str:
    staging = three["staging"]
    version = staging.version(minor)
    plan_release(staging.repo, version)
    assert main(["release-branch", "--tag", version, "--config", str(three["config"])]) == 0, capsys.readouterr()
    staging.versions.append(version)
    return version


def hosted_version(host: TestHost, port: int) -> str:
    """The backend's answer on the host's loopback (it publishes nowhere else), through a tunnel
    of the test's own."""
    with Tunnel(host.remote(), port) as tunnel:
        return httpx.get(f"http://127.0.0.1:{tunnel.local_port}/health", timeout=10).json()["version"]


def running(host: TestHost) -> list[str]:
    """The containers running on the host (any project), by name."""
    return sorted(host.ssh("docker", "ps", "--format", "{{.Names}}").stdout.split())


def json_of(said: str) -> Any:
    start = min(i for i in (said.find("{"), said.find("[")) if i >= 0)
    return json.loads(said[start : max(said.rfind("}"), said.rfind("]")) + 1])


def found_on_host(host: TestHost, *names: str) -> list[str]:
    """Paths anywhere on the host (its engine's containers and volumes included) whose name is one
    of `names`."""
    found = []
    for name in names:
        proc = host.exec(
            "find", "/", "(", "-path", "/proc", "-o", "-path", "/sys", ")", "-prune", "-o", "-name", name, "-print"
        )
        found += proc.stdout.split()
    return found


def test_a_release_through_development_staging_and_production_on_their_own_hosts(
    three: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    settings: Settings = three["settings"]
    hosts: dict[str, TestHost] = three["hosts"]
    staging_host, production_host = hosts["staging"], hosts["production"]
    for name in ("development", "staging", "production"):
        ops(capsys, three, name, "init")
    first, second = release(three, capsys, 1), release(three, capsys, 2)

    # development, here: the sample service as a process of this machine.
    ops(capsys, three, "development", "deploy", "--tag", first)
    dev = settings.environment("development")
    dev_port = dev.processes[0].port
    assert httpx.get(f"http://127.0.0.1:{dev_port}/api/v1/version", timeout=5).json()["version"] == first

    # staging, on host 1: built here, sent there, verified through tunnels.
    said = ops(capsys, three, "staging", "deploy", "--tag", first)
    assert f"sending ultra-ai/backend:{first}" in said
    said = ops(capsys, three, "staging", "verify", "--json")
    report = json_of(said)
    passed = {r["kind"] for r in report["results"] if r["ok"] and not r["skipped"]}
    assert {"health", "database", "redis", "endpoint", "resources"} <= passed, report["results"]
    assert hosted_version(staging_host, three["staging"].ports["backend"]) == first

    # production, on host 2, after staging verified the same version.
    # Its deploy verifies it (the verify command itself is staging's above): through its own tunnels.
    said = ops(capsys, three, "production", "deploy", "--tag", first)
    assert re.search(r"deploy_verify: verify production: health http://127\.0\.0\.1:\d+/health\S*: ok", said), said
    assert "deploy_verify: verify production: database: ok" in said, said
    assert f"deployed {first} to production" in said
    assert hosted_version(production_host, 8102) == first
    # Each host runs its own environment only; nothing of either runs here.
    staging_project, production_project = three["staging"].project, three["production"].project
    assert running(staging_host) == [f"{staging_project}_{s}_1" for s in ("backend", "postgres", "redis")]
    assert running(production_host) == [f"{production_project}_{s}_1" for s in ("backend", "postgres", "redis")]

    # Backups of both hosted environments: taken on their hosts, kept here only.
    kept: dict[str, dict[str, Any]] = {}
    for name in ("staging", "production"):
        ops(capsys, three, name, "backups", "create")
        rows = json_of(ops(capsys, three, name, "backups", "list", "--json"))
        manual = [r for r in rows if r.get("label") == "manual"]
        assert len(manual) == 1 and manual[0]["status"] == "complete", rows
        kept[name] = manual[0]
        folder = settings.environment(name).backups_path / manual[0]["id"]
        manifest = json.loads((folder / MANIFEST).read_text())
        assert manifest["database"]["dumped_on"] == f"deploy@{hosts[name].address}:22"
        assert (folder / DUMP_FILE).stat().st_size > 0
    # Not the backups (nor any deploy's backup) on either host: no folder by any backup's id, no dump.
    ids = [p.name for name in ("staging", "production") for p in settings.environment(name).backups_path.iterdir()]
    assert len(ids) >= 4  # the two deploys' backups and the two taken above
    for host in (staging_host, production_host):
        assert found_on_host(host, DUMP_FILE, MANIFEST, *ids) == []

    # The maintenance jobs on staging, each where its part lives.
    staging_env = settings.environment("staging")
    said = ops(capsys, three, "staging", "maintenance", "status")
    assert f"ultra-ai/backend:{first}" in said and "(healthy)" in said
    ops(capsys, three, "staging", "maintenance", "vacuum")
    assert json_of(ops(capsys, three, "staging", "maintenance", "cache-stats"))["used_memory"] > 0
    day = date.today()
    said = ops(capsys, three, "staging", "maintenance", "archive-logs", "--day", day.isoformat())
    assert f"fetched 1 log files of {day} from staging's host" in said
    with tarfile.open(staging_env.log_dir / "archive" / f"logs_{day:%Y%m%d}.tar.gz") as tar:
        assert tar.getnames() == [f"backend.log.{day:%Y%m%d}"]

    # A row written after the backup, then the second release: the rollback to the backup kept
    # here brings back the first release and the database as it was backed up.
    with Reach(staging_env) as reached, psycopg.connect(**reached.database.conninfo(), autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM prompts").fetchone()[0]
        conn.execute("INSERT INTO prompts (title) VALUES ('written after the backup')")
    ops(capsys, three, "staging", "deploy", "--tag", second)
    assert hosted_version(staging_host, three["staging"].ports["backend"]) == second
    said = ops(capsys, three, "staging", "rollback", "--backup", kept["staging"]["id"], "--yes")
    assert f"rolled back staging to backup {kept['staging']['id']}" in said
    assert hosted_version(staging_host, three["staging"].ports["backend"]) == first
    with Reach(staging_env) as reached, psycopg.connect(**reached.database.conninfo(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM prompts").fetchone()[0] == before
    # production and development kept running the first release.
    assert hosted_version(production_host, 8102) == first
    assert httpx.get(f"http://127.0.0.1:{dev_port}/api/v1/version", timeout=5).json()["version"] == first

    # status: each environment with its host (development has none), version and services.
    said = ops(capsys, three, "development", "status")
    assert "environment  development (process runtime)" in said and "host " not in said
    assert f"version      {first}" in said
    for name in ("staging", "production"):
        said = ops(capsys, three, name, "status")
        assert f"environment  {name} (compose runtime)" in said
        assert f"host         deploy@{hosts[name].address}:22 answers" in said
        assert f"version      {first}" in said
        services = {line.split()[1]: line.split()[2] for line in said.splitlines() if line.startswith("service")}
        assert services == {"backend": "running", "postgres": "running", "redis": "running"}, said
