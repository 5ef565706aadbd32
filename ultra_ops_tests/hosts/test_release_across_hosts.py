"""One release through the promotion path with staging and production on hosts of their own:
development on this machine (the process runtime), staging on one host and production on another
(compose over SSH), all in one config and through the CLI an operator uses. Deploy and verify on
each, backups of the hosted environments kept here (nothing of them on either host), the
maintenance jobs on staging, a second release to staging rolled back from the backup kept here,
and `status` of all three naming their hosts.

Staging is also the one hosted environment's whole cycle, as an operator runs it: init (the stores
started on the host, the database made through a tunnel), deploy (the backend built here from the
release's commit and streamed to the host), verify (health, the database, Redis, endpoints and
docker stats on the host, through tunnels to the host's loopback), the maintenance jobs (status,
vacuum, cache, the backend's logs archived here), a second deploy (the image only tagged when the
host has it), the rollback (the first release's image, already on the host: nothing built or sent),
stop, recover and status, and a cut host. Every command closes the tunnels it opened: no ssh to
either host is left running after it. (One scenario for both: each deploy over ssh costs tens of
seconds, and a cycle of its own repeated most of them.)"""

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
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.settings import Settings, load_settings
from ultra_ops_tests.support.docker import docker, image_id
from ultra_ops_tests.support.hosts import HostFleet, TestHost, ssh_clients_to, three_environment_config
from ultra_ops_tests.support.services import REDIS_URL

pytestmark = pytest.mark.docker

STORES = ("ultra-local/postgres:15", "ultra-local/redis:7")


@pytest.fixture
def three(
    tmp_path: Path, fleet: HostFleet, pg_database: str, redis_prefix: str, dagster_home: Path
) -> Iterator[dict[str, Any]]:
    """development here, staging on host 1, production on host 2 (each with the stores' images from
    its start); the hosts go with the fleet,
    development's service is stopped and the backend images built here removed after."""
    staging_host, production_host = fleet.add(2, images=STORES)
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


def run_ops(capsys: pytest.CaptureFixture[str], three: dict[str, Any], environment: str, *argv: str) -> tuple[int, str]:
    """`ultra-ops ARGV --environment ENVIRONMENT`, which must leave no ssh running to either host
    (every tunnel it opened closed), whether it succeeds or not; its exit code and output."""
    started = time.monotonic()
    code = main([*argv, "--environment", environment, "--config", str(three["config"])])
    print(f"{environment} {' '.join(argv)}: {time.monotonic() - started:.1f}s", file=sys.__stderr__, flush=True)
    captured = capsys.readouterr()
    for host in three["hosts"].values():
        left = ssh_clients_to(host.address)
        assert not left, f"`ultra-ops {argv[0]}` on {environment} left ssh running: {left}"
    return code, captured.out + captured.err


def ops(capsys: pytest.CaptureFixture[str], three: dict[str, Any], environment: str, *argv: str) -> str:
    """run_ops, which must succeed; its output."""
    code, said = run_ops(capsys, three, environment, *argv)
    assert code == 0, f"ultra-ops {' '.join(argv)} on {environment} exited {code}:\n{said}"
    return said


def release(three: dict[str, Any], capsys: pytest.CaptureFixture[str], minor: int) -> str:
    staging = three["staging"]
    version = staging.version(minor)
    plan_release(staging.repo, version)
    assert main(["release-branch", "--tag", version, "--config", str(three["config"])]) == 0, capsys.readouterr()
    staging.versions.append(version)
    return version


def running(host: TestHost) -> list[str]:
    """The containers running on the host (any project), by name."""
    return sorted(host.ssh("docker", "ps", "--format", "{{.Names}}").stdout.split())


def services_running(host: TestHost, project: str) -> list[str]:
    """The services of the compose project `project` running on the host."""
    ps = host.ssh("docker", "ps", "--filter", f"label=com.docker.compose.project={project}", "--format", "{{.Names}}")
    return sorted(name.split("_")[-2] for name in ps.stdout.split())


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
    staging = three["staging"]
    ops(capsys, three, "development", "init")
    said = ops(capsys, three, "staging", "init")
    assert "created database" not in said or "ultra_staging" in said
    assert services_running(staging_host, staging.project) == ["postgres", "redis"], "the stores run on the host"
    assert not docker("ps", "-q", "--filter", f"label=com.docker.compose.project={staging.project}").stdout.strip()
    ops(capsys, three, "production", "init")
    first, second = release(three, capsys, 1), release(three, capsys, 2)

    # development, here: the sample service as a process of this machine.
    ops(capsys, three, "development", "deploy", "--tag", first)
    dev = settings.environment("development")
    dev_port = dev.processes[0].port
    assert httpx.get(f"http://127.0.0.1:{dev_port}/api/v1/version", timeout=5).json()["version"] == first

    # staging, on host 1: built here from the release's commit, sent there, verified through tunnels.
    said = ops(capsys, three, "staging", "deploy", "--tag", first)
    backend = f"ultra-ai/backend:{first}"
    assert f"compose build {staging.project} at {first} from" in said
    assert f"sending {backend}" in said and "docker save | ssh docker load" in said
    assert image_id(backend) and staging_host.image_id(backend) == image_id(backend)
    assert services_running(staging_host, staging.project) == ["backend", "postgres", "redis"]
    said = ops(capsys, three, "staging", "verify", "--json")
    report = json_of(said)
    # Each kind reached the host's loopback through a tunnel: health and the endpoints (the backend),
    # the database probes, Redis, the endpoints' latency.
    passed = {r["kind"] for r in report["results"] if r["ok"] and not r["skipped"]}
    assert {"health", "database", "redis", "endpoint", "latency", "resources"} <= passed, report["results"]
    [host_disk] = [r for r in report["results"] if r["name"] == "disk host"]  # df on the host
    assert host_disk["ok"] and f"free at /srv/ultra-ops/staging on {staging_host.address}" in host_disk["detail"]
    resources = {r["name"]: r["metrics"] for r in report["results"] if r["kind"] == "resources"}
    # docker stats ran on the host: its containers, with their memory.
    assert set(resources) == {f"resources {staging.container(s)}" for s in ("backend", "postgres", "redis")}
    assert all(m["memory_mb"] > 0 for m in resources.values())
    assert staging_host.served_version(staging.ports["backend"]) == first

    # production, on host 2, after staging verified the same version.
    # Its deploy verifies it (the verify command itself is staging's above): through its own tunnels.
    said = ops(capsys, three, "production", "deploy", "--tag", first)
    assert re.search(r"deploy_verify: verify production: health http://127\.0\.0\.1:\d+/health\S*: ok", said), said
    assert "deploy_verify: verify production: database: ok" in said, said
    assert f"deployed {first} to production" in said
    assert production_host.served_version(8102) == first
    # Each host runs its own environment only; nothing of either runs here.
    staging_project, production_project = staging.project, three["production"].project
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
    lines = {
        line.split()[0]: line
        for line in said.splitlines()
        if line.split()[:1] in (["backend"], ["postgres"], ["redis"])
    }
    assert set(lines) == {"backend", "postgres", "redis"}
    assert backend in lines["backend"] and "(healthy)" in lines["postgres"]
    ops(capsys, three, "staging", "maintenance", "vacuum")
    assert json_of(ops(capsys, three, "staging", "maintenance", "cache-stats"))["used_memory"] > 0
    ops(capsys, three, "staging", "maintenance", "cache-clear", "--pattern", "nothing-here:*")
    # The backend's log is on the host, in its volume: rotated there, streamed here, archived here
    # (verified), and only then removed there.
    in_backend = ["docker", "exec", staging.container("backend")]
    logged = staging_host.ssh(*in_backend, "cat", "/app/logs/backend.log").stdout
    assert logged.count("\n") > 3
    day = date.today()
    said = ops(capsys, three, "staging", "maintenance", "archive-logs", "--day", day.isoformat())
    assert f"fetched 1 log files of {day} from staging's host" in said
    with tarfile.open(staging_env.log_dir / "archive" / f"logs_{day:%Y%m%d}.tar.gz") as tar:
        assert tar.getnames() == [f"backend.log.{day:%Y%m%d}"]
        member = tar.extractfile(tar.getmembers()[0])
        assert member is not None
        assert member.read().decode().startswith(logged)
    assert staging_host.ssh(*in_backend, "ls", "/app/logs").stdout.split() in ([], ["backend.log"])

    # A row written after the backup, then the second release: the rollback to the backup kept
    # here brings back the first release and the database as it was backed up.
    with Reach(staging_env) as reached, psycopg.connect(**reached.database.conninfo(), autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM prompts").fetchone()[0]
        conn.execute("INSERT INTO prompts (title) VALUES ('written after the backup')")
    said = ops(capsys, three, "staging", "deploy", "--tag", second)
    if image_id(f"ultra-ai/backend:{second}") == image_id(backend):
        # The same build (no change to the backend between the two releases): only tagged there.
        assert f"ultra-ai/backend:{second} ({image_id(backend)[7:19]}) is on staging's host" in said
        assert "tagged there, not sent" in said and f"sending ultra-ai/backend:{second}" not in said
    else:
        assert f"sending ultra-ai/backend:{second}" in said
    assert staging_host.image_id(f"ultra-ai/backend:{second}") == image_id(f"ultra-ai/backend:{second}")
    assert staging_host.served_version(staging.ports["backend"]) == second
    assert staging_host.image_id(backend) == image_id(backend), "the first release's image stays on the host"
    # The rollback runs the restored release's image, which the host has: nothing built, nothing sent.
    said = ops(capsys, three, "staging", "rollback", "--backup", kept["staging"]["id"], "--yes")
    assert f"rolled back staging to backup {kept['staging']['id']}" in said
    assert "compose build" not in said and "sending" not in said
    assert f"{backend} is on staging's host deploy@{staging_host.address}:22 already" in said
    assert staging_host.served_version(staging.ports["backend"]) == first
    with Reach(staging_env) as reached, psycopg.connect(**reached.database.conninfo(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM prompts").fetchone()[0] == before
    # production and development kept running the first release.
    assert production_host.served_version(8102) == first
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

    # staging stopped (the stores keep running), recovered, and its status saying so.
    ops(capsys, three, "staging", "stop")
    assert services_running(staging_host, staging.project) == ["postgres", "redis"]
    ops(capsys, three, "staging", "recover")
    said = ops(capsys, three, "staging", "status")
    assert f"host         deploy@{staging_host.address}:22 answers" in said
    services = {line.split()[1]: line.split()[2] for line in said.splitlines() if line.startswith("service")}
    assert services == {"backend": "stopped", "postgres": "running", "redis": "running"}

    # staging's host cut: a job fails within the connect timeout, naming the host, and leaves no ssh.
    staging_host.cut()
    try:
        started = time.monotonic()
        code, said = run_ops(capsys, three, "staging", "maintenance", "vacuum")
        assert code == 1 and time.monotonic() - started < 30, said
        assert f"staging's host deploy@{staging_host.address}:22: no answer within 5 s" in said
    finally:
        staging_host.restore()
