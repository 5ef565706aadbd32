"""A compose environment on this machine's dockerd, through the CLI an operator uses: init (env file,
generated passwords, the project's PostgreSQL and Redis), deploy with a build from the release's
commit, verify, status, cache stats against the password-protected Redis, a second deploy, rollback
(database restored, backend back on the restored release's image without a rebuild), stop, recover."""

from __future__ import annotations

import json
import stat

import httpx
import psycopg
import pytest
import redis

from ultra_ops.cli import main
from ultra_ops.demo_calendar import plan_release
from ultra_ops.engine.envfile import read_env_file
from ultra_ops_tests.support.docker import ComposeEnvironment, Registry, docker, image_id

pytestmark = pytest.mark.docker


def ops(capsys: pytest.CaptureFixture[str], env: ComposeEnvironment, *argv: str) -> tuple[int, str]:
    code = main([*argv, "--environment", env.environment, "--config", str(env.config)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def release(env: ComposeEnvironment, capsys: pytest.CaptureFixture[str], minor: int) -> str:
    """A release as the calendar makes one: the changelog on main names it, then its branch."""
    version = env.version(minor)
    plan_release(env.repo, version)
    code = main(["release-branch", "--tag", version, "--config", str(env.config)])
    assert code == 0, capsys.readouterr()
    env.versions.append(version)
    return version


def count_rows(conninfo: dict) -> int:
    with psycopg.connect(**conninfo) as conn:
        return conn.execute("SELECT count(*) FROM prompts").fetchone()[0]


def test_init_prepares_the_project_with_its_own_passwords(
    compose_env: ComposeEnvironment, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = ops(capsys, compose_env, "init")
    assert code == 0, out
    values = read_env_file(compose_env.env_file)
    assert stat.S_IMODE(compose_env.env_file.stat().st_mode) == 0o600
    assert len(values["POSTGRES_PASSWORD"]) >= 24 and len(values["REDIS_PASSWORD"]) >= 24
    assert values["POSTGRES_PASSWORD"] not in out and values["REDIS_PASSWORD"] not in out
    assert values["ULTRA_POSTGRES_IMAGE"] == "ultra-local/postgres:15"
    # The stores run in the project, published where the config looks, and ask for their passwords.
    port = compose_env.ports["postgres"]
    base = {"host": "127.0.0.1", "port": port, "user": "ultra", "dbname": "ultra_staging", "connect_timeout": 5}
    with psycopg.connect(**base, password=values["POSTGRES_PASSWORD"]) as conn:
        assert conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()[0] == 15
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**base, password="wrong").close()
    r = redis.Redis(host="127.0.0.1", port=compose_env.ports["redis"], socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        r.ping()
    authed = redis.Redis(
        host="127.0.0.1", port=compose_env.ports["redis"], password=values["REDIS_PASSWORD"], socket_timeout=5
    )
    assert authed.ping()
    # Run again, init changes nothing it made: the passwords stay.
    code, out = ops(capsys, compose_env, "init")
    assert code == 0, out
    assert read_env_file(compose_env.env_file)["POSTGRES_PASSWORD"] == values["POSTGRES_PASSWORD"]


def test_release_cycle_on_compose(compose_env: ComposeEnvironment, capsys: pytest.CaptureFixture[str]) -> None:
    env = compose_env
    assert ops(capsys, env, "init")[0] == 0
    first, second = release(env, capsys, 1), release(env, capsys, 2)
    # Not committed: a build from the release's commit must not see it.
    (env.repo / "backend" / "ultra_ops" / "sample_service" / "uncommitted.py").write_text("x = 1\n")

    code, out = ops(capsys, env, "deploy", "--tag", first)
    assert code == 0, out
    assert f"compose build {env.project} at {first} from" in out
    assert image_id(f"ultra-ai/backend:{first}")
    listing = docker("run", "--rm", "--entrypoint", "ls", f"ultra-ai/backend:{first}", "/app/ultra_ops/sample_service")
    assert "app.py" in listing.stdout and "uncommitted.py" not in listing.stdout
    backend = f"http://127.0.0.1:{env.ports['backend']}/health"
    assert httpx.get(backend, timeout=5).json()["version"] == first
    db = env.conninfo()
    seeded = count_rows(db)  # what the migrations put in
    with psycopg.connect(**db) as conn:
        conn.execute("INSERT INTO prompts (title) VALUES ('kept by the rollback')")
    assert count_rows(db) == seeded + 1

    code, out = ops(capsys, env, "verify", "--json")
    assert code == 0, out
    report = json.loads(out[out.index("{") : out.rindex("}") + 1])
    # Resources of every container of the project from docker stats, as performance verification sees them.
    resources = {r["name"]: r["metrics"] for r in report["results"] if r["kind"] == "resources"}
    assert set(resources) == {f"resources {env.container(s)}" for s in ("backend", "postgres", "redis")}
    assert all(m["memory_mb"] > 0 for m in resources.values())
    code, out = ops(capsys, env, "maintenance", "status")
    assert code == 0, out
    lines = {
        line.split()[0]: line for line in out.splitlines() if line.split()[:1] in (["backend"], ["postgres"], ["redis"])
    }
    assert set(lines) == {"backend", "postgres", "redis"}
    assert f"ultra-ai/backend:{first}" in lines["backend"] and "(healthy)" in lines["postgres"]
    assert " MB " in lines["backend"]  # resident memory from docker stats
    code, out = ops(capsys, env, "maintenance", "cache-stats")
    assert code == 0, out
    assert json.loads(out[out.index("{") : out.rindex("}") + 1])["used_memory"] > 0

    code, out = ops(capsys, env, "deploy", "--tag", second)
    assert code == 0, out
    assert httpx.get(backend, timeout=5).json()["version"] == second
    with psycopg.connect(**db) as conn:
        conn.execute("INSERT INTO prompts (title) VALUES ('written under the second release')")
    assert count_rows(db) == seeded + 2
    built = image_id(f"ultra-ai/backend:{first}")

    # The newest backup was taken before the second release: the database as the first release left it.
    code, out = ops(capsys, env, "rollback", "--yes")
    assert code == 0, out
    assert "compose build" not in out
    assert image_id(f"ultra-ai/backend:{first}") == built
    assert count_rows(db) == seeded + 1
    assert httpx.get(backend, timeout=5).json()["version"] == first
    inspected = docker("inspect", "--format", "{{.Config.Image}}", env.container("backend"))
    assert inspected.stdout.strip() == f"ultra-ai/backend:{first}"
    # The restored release's container was made by compose before the stop and started after the
    # swap: the project stays compose's own, one backend container that `up -d` of that release
    # leaves as it is (no recreate, no name conflict).
    assert f"docker start {env.project} backend at {first}" in out, out
    serving = docker("inspect", "--format", "{{.Id}}", env.container("backend")).stdout.strip()
    up = env.compose(
        "up", "-d", env={"ULTRA_IMAGE_TAG": first, "ULTRA_REGISTRY": "", "ULTRA_ENVIRONMENT": env.environment}
    )
    assert up.returncode == 0 and "is up-to-date" in up.stderr and "Recreat" not in up.stderr, up.stderr
    assert env.compose("ps", "-q", "backend").stdout.split() == [serving]

    code, out = ops(capsys, env, "stop")
    assert code == 0, out
    ps = env.compose("ps", "--services", "--filter", "status=running")
    assert sorted(ps.stdout.split()) == ["postgres", "redis"]  # the stores keep running
    with pytest.raises(httpx.HTTPError):
        httpx.get(backend, timeout=2)
    code, out = ops(capsys, env, "recover")
    assert code == 0, out
    code, out = ops(capsys, env, "status")
    assert code == 0, out
    assert "backend" in out and "stopped" in out


def test_deploy_pushes_to_the_registry_and_runs_the_pushed_image(
    compose_env: ComposeEnvironment, registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    env = compose_env
    assert ops(capsys, env, "init")[0] == 0
    version = release(env, capsys, 1)
    code, out = ops(capsys, env, "deploy", "--tag", version, "--registry", registry.address)
    assert code == 0, out
    assert f"compose push {env.project} {version} to {registry.address}/" in out
    pushed = f"{registry.address}/ultra-ai/backend:{version}"
    tags = httpx.get(f"http://{registry.address}/v2/ultra-ai/backend/tags/list", timeout=5).json()
    assert tags["tags"] == [version]
    # What runs is the image as pushed: its digest is the registry's manifest's.
    head = httpx.head(
        f"http://{registry.address}/v2/ultra-ai/backend/manifests/{version}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=5,
    )
    digests = json.loads(docker("image", "inspect", "--format", "{{json .RepoDigests}}", pushed).stdout)
    assert f"{registry.address}/ultra-ai/backend@{head.headers['Docker-Content-Digest']}" in digests
    running = docker("inspect", "--format", "{{.Config.Image}}", env.container("backend")).stdout.strip()
    assert running == pushed
    assert httpx.get(f"http://127.0.0.1:{env.ports['backend']}/health", timeout=5).json()["version"] == version
    # The env file names the image as pushed, so a bare `up -d` (the release document's manual
    # commands, which set neither the tag nor the registry) keeps the pushed image running.
    assert read_env_file(env.env_file)["ULTRA_REGISTRY"] == f"{registry.address}/"
    serving = docker("inspect", "--format", "{{.Id}}", env.container("backend")).stdout.strip()
    up = env.compose("up", "-d", env={"ULTRA_ENVIRONMENT": env.environment})
    assert up.returncode == 0 and "is up-to-date" in up.stderr and "Recreat" not in up.stderr, up.stderr
    assert env.compose("ps", "-q", "backend").stdout.split() == [serving]
