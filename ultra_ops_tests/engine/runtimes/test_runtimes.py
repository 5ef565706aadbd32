"""The process runtime with real processes, and the compose runtime's commands."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from ultra_ops.engine.errors import RuntimeFailure
from ultra_ops.engine.release.migrate import apply_migrations
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.runtimes.compose import ComposeRuntime, registry_prefix
from ultra_ops.engine.runtimes.process import ProcessRuntime, _port_open
from ultra_ops.engine.settings import Environment, ProcessSpec, load_settings
from ultra_ops_tests.support.configs import write_config
from ultra_ops_tests.support.ports import free_port
from ultra_ops_tests.support.services import REPO

COMPOSE_FILE = REPO / "deploy" / "ultra-ai.compose.yml"


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.fixture
def staging(tmp_path: Path, pg_database: str) -> Environment:
    path = write_config(tmp_path, pg_database)
    env = load_settings(path).environment("staging")
    apply_migrations(env)
    return env


@pytest.fixture
def stop_after() -> Iterator[list[ProcessRuntime]]:
    """Runtimes registered here are brought down after the test, whatever happened."""
    runtimes: list[ProcessRuntime] = []
    yield runtimes
    for runtime in runtimes:
        runtime.down()


def _runtime(env: Environment, stop_after: list[ProcessRuntime]) -> ProcessRuntime:
    runtime = ProcessRuntime(env)
    stop_after.append(runtime)
    return runtime


def _pid(runtime: ProcessRuntime, name: str = "backend") -> int:
    return json.loads((runtime.run_dir / f"{name}.pid").read_text())["pid"]


def test_up_replace_down(staging: Environment, stop_after: list[ProcessRuntime]) -> None:
    runtime = _runtime(staging, stop_after)
    assert get_runtime(staging).__class__ is ProcessRuntime
    spec = staging.processes[0]
    assert runtime.status()[0].running is False

    runtime.up("v1.0.0")
    runtime.wait_healthy(20)
    [status] = runtime.status()
    first = _pid(runtime)
    assert status.running and f"pid {first}" in status.detail and "v1.0.0" in status.detail
    assert httpx.get(spec.health_url).json()["version"] == "v1.0.0"
    detail = httpx.get(staging.verify.health_urls[0]).json()
    assert detail["status"] == "ok" and detail["environment"] == "staging"

    runtime.up("v1.1.0")
    runtime.wait_healthy(20)
    second = _pid(runtime)
    assert second != first and not _pid_alive(first)
    assert httpx.get(spec.health_url).json()["version"] == "v1.1.0"
    assert "starting" in runtime.logs(50)

    runtime.down()
    assert not (runtime.run_dir / "backend.pid").exists()
    assert not _pid_alive(second) and not _port_open(spec.port)
    assert runtime.status()[0].running is False
    runtime.down()  # not running: no error
    assert "stopped" in (staging.log_dir / "backend.log").read_text()


def test_process_env_contract(tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(
        tmp_path,
        pg_database,
        extra="[environments.staging.processes.backend.env]\n"
        'FEATURE_FLAG = "on"\nULTRA_VERSION = "overridden-by-ultra-ops"',
    )
    text = path.read_text().replace(
        'url = "redis://', 'username = "app"\npassword_env = "UO_TEST_REDIS_PW"\nurl = "redis://'
    )
    path.write_text(text)
    monkeypatch.setenv("UO_TEST_REDIS_PW", "redis-pass-123")
    env = load_settings(path).environment("staging")
    env.env_file.write_text("API_KEY=from-env-file-123\nFEATURE_FLAG=env-file\n")
    spec = env.processes[0]
    e = ProcessRuntime(env).process_env(spec, "v9.9.9")
    assert e["PORT"] == str(spec.port) and e["ULTRA_VERSION"] == "v9.9.9"
    assert e["ULTRA_ENVIRONMENT"] == "staging" and e["ULTRA_LOG_DIR"] == str(env.log_dir)
    assert e["API_KEY"] == "from-env-file-123" and e["FEATURE_FLAG"] == "on"  # spec.env beats the env file
    assert e["PGDATABASE"] == pg_database and e["PGHOST"] == "127.0.0.1" and e["PGPORT"] == "5432"
    assert e["REDIS_URL"].startswith("redis://") and e["REDIS_USERNAME"] == "app"
    assert e["REDIS_PASSWORD"] == "redis-pass-123"
    assert e["PATH"] == os.environ["PATH"]


def _one_process(env: Environment, **spec: object) -> Environment:
    return dataclasses.replace(env, processes=(ProcessSpec(name="worker", **spec),))  # type: ignore[arg-type]


def test_exiting_process_fails_fast_with_redacted_output(
    staging: Environment, stop_after: list[ProcessRuntime]
) -> None:
    staging.env_file.write_text("API_KEY=sk-very-secret-value\n")
    port = free_port()
    code = "import os; print('boom: cannot start with', os.environ['API_KEY']); raise SystemExit(3)"
    env = _one_process(
        staging, command=(sys.executable, "-c", code), port=port, health_url=f"http://127.0.0.1:{port}/health"
    )
    runtime = _runtime(env, stop_after)
    env.log_dir.mkdir(parents=True, exist_ok=True)
    (env.log_dir / "worker.out").write_text("stale line from an earlier run\n")
    runtime.up("v1")
    start = time.monotonic()
    with pytest.raises(RuntimeFailure) as info:
        runtime.wait_healthy(20)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "worker" in message and "boom: cannot start with ***" in message
    assert "sk-very-secret-value" not in message and "stale line" not in message


def test_unhealthy_process_times_out(staging: Environment, stop_after: list[ProcessRuntime]) -> None:
    port = free_port()  # nothing listens here: the process just sleeps
    env = _one_process(
        staging,
        command=(sys.executable, "-c", "import time; time.sleep(30)"),
        port=port,
        health_url=f"http://127.0.0.1:{port}/health",
        stop_timeout_s=2.0,
    )
    runtime = _runtime(env, stop_after)
    runtime.up("v1")
    with pytest.raises(RuntimeFailure, match="worker not healthy after 0.5s"):
        runtime.wait_healthy(0.5)


def test_sigterm_ignored_is_killed(staging: Environment, stop_after: list[ProcessRuntime]) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    env = _one_process(staging, command=(sys.executable, "-c", code), stop_timeout_s=1.0)
    runtime = _runtime(env, stop_after)
    runtime.up("v1")
    out = env.log_dir / "worker.out"
    deadline = time.monotonic() + 10
    while "ready" not in out.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = _pid(runtime, "worker")
    runtime.wait_healthy(5)  # no health URL: running is enough
    start = time.monotonic()
    runtime.down()
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed < 5 and not _pid_alive(pid)
    assert runtime.status()[0].running is False


def test_service_outlives_the_caller(staging: Environment, stop_after: list[ProcessRuntime]) -> None:
    runtime = _runtime(staging, stop_after)
    script = textwrap.dedent(f"""
        from ultra_ops.engine.runtimes.process import ProcessRuntime
        from ultra_ops.engine.settings import load_settings
        env = load_settings({str(staging.config_file)!r}).environment("staging")
        ProcessRuntime(env).up("v2.0.0")
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    runtime.wait_healthy(20)
    assert httpx.get(staging.processes[0].health_url).json()["version"] == "v2.0.0"
    pid = _pid(runtime)
    runtime.down()
    assert not _pid_alive(pid) and not _port_open(staging.processes[0].port)


def test_reused_pid_is_not_ours(staging: Environment, stop_after: list[ProcessRuntime]) -> None:
    runtime = _runtime(staging, stop_after)
    runtime.run_dir.mkdir(parents=True)
    # Our own pid with another start time: a pid the kernel handed to someone else.
    (runtime.run_dir / "backend.pid").write_text(json.dumps({"pid": os.getpid(), "start_time": 1}))
    assert runtime.status()[0].running is False
    runtime.down()  # must not signal the test process
    assert not (runtime.run_dir / "backend.pid").exists()


def test_port_taken_by_a_stranger(staging: Environment, stop_after: list[ProcessRuntime]) -> None:
    runtime = _runtime(staging, stop_after)
    with socket.socket() as s:
        s.bind(("127.0.0.1", staging.processes[0].port))
        s.listen()
        with pytest.raises(RuntimeFailure, match="already in use"):
            runtime.up("v1")


def test_build_checks_programs(staging: Environment) -> None:
    ProcessRuntime(staging).build("v1")
    missing = _one_process(staging, command=("no-such-program-ultra",))
    with pytest.raises(RuntimeFailure, match="no-such-program-ultra"):
        ProcessRuntime(missing).build("v1")


# -- compose ---------------------------------------------------------------------------------


def _compose_env(tmp_path: Path, command: list[str], *, health: str = "") -> Environment:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    (root / ".env.staging").write_text("POSTGRES_PASSWORD=pg-secret-value\nREDIS_PASSWORD=redis-secret-value\n")
    path = tmp_path / "ultra_ops.toml"
    path.write_text(
        textwrap.dedent(f"""
        [environments.staging]
        runtime = "compose"
        root = "{root}"
        compose_file = "{COMPOSE_FILE}"
        compose_command = {json.dumps(command)}
        state_dir = "{tmp_path / "state"}"

        [environments.staging.database]
        name = "ultra"

        [environments.staging.verify]
        health_urls = [{health}]
    """)
    )
    return load_settings(path).environment("staging")


@pytest.mark.unit
def test_compose_command_builders(tmp_path: Path) -> None:
    env = _compose_env(tmp_path, ["docker", "compose"])
    rt = get_runtime(env)
    assert isinstance(rt, ComposeRuntime)
    base = [
        "docker",
        "compose",
        "-f",
        str(COMPOSE_FILE),
        "-p",
        "ultra-staging",
        "--env-file",
        str(tmp_path / "root" / ".env.staging"),
    ]
    assert rt.compose_base() == base
    assert rt.build_args("v1.2.3") == [*base, "build", "--force-rm"]
    assert rt.push_args() == [*base, "push"]
    assert rt.pull_args() == [*base, "pull"]
    assert rt.up_args() == [*base, "up", "-d", "--remove-orphans"]
    assert rt.down_args() == [*base, "down"]
    assert rt.ps_args() == [*base, "ps"]
    assert rt.logs_args(20) == [*base, "logs", "--no-color", "--tail=20"]
    assert rt.config_args() == [*base, "config"]
    assert rt.command_env("v1.2.3", "registry.example.com") == {
        "ULTRA_IMAGE_TAG": "v1.2.3",
        "ULTRA_REGISTRY": "registry.example.com/",
        "ULTRA_ENVIRONMENT": "staging",
        "ULTRA_LOG_VOLUME": str(env.log_dir),
    }
    assert rt.command_env("v1.2.3")["ULTRA_REGISTRY"] == ""
    assert registry_prefix("https://registry.example.com:5000/") == "registry.example.com:5000/"

    legacy = ComposeRuntime(
        dataclasses.replace(env, compose_command=("docker-compose",)), compose_file=tmp_path / "other.yml"
    )
    assert legacy.up_args()[:3] == ["docker-compose", "-f", str(tmp_path / "other.yml")]


@pytest.mark.unit
def test_compose_push_runs_build_then_push_with_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Compose's interpolation prefers the process environment over --env-file: none of these may reach it.
    monkeypatch.setenv("POSTGRES_PASSWORD", "production-pg-password")
    monkeypatch.setenv("ULTRA_PROD_DB_PASSWORD", "production-db-password")
    record = tmp_path / "calls.jsonl"
    fake = tmp_path / "fake_compose.py"
    fake.write_text(
        textwrap.dedent(f"""
        import json, os, sys
        with open({str(record)!r}, "a") as f:
            f.write(json.dumps({{"argv": sys.argv[1:], "tag": os.environ.get("ULTRA_IMAGE_TAG"),
                                "registry": os.environ.get("ULTRA_REGISTRY"), "env": dict(os.environ)}}) + "\\n")
    """)
    )
    rt = get_runtime(_compose_env(tmp_path, [sys.executable, str(fake)]))
    rt.push("v1.2.3", "registry.example.com")
    rt.up("v1.2.3")
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert [c["argv"][6:] for c in calls] == [["build", "--force-rm"], ["push"], ["up", "-d", "--remove-orphans"]]
    assert [c["registry"] for c in calls] == ["registry.example.com/", "registry.example.com/", ""]
    assert {c["tag"] for c in calls} == {"v1.2.3"}
    for call in calls:
        assert "POSTGRES_PASSWORD" not in call["env"] and "ULTRA_PROD_DB_PASSWORD" not in call["env"]
        assert call["env"]["PATH"] == os.environ["PATH"]

    fake.write_text("import sys; print('denied for pg-secret-value', file=sys.stderr); sys.exit(1)")
    with pytest.raises(RuntimeFailure) as info:
        rt.up("v1.2.3")
    assert "compose up" in str(info.value) and "pg-secret-value" not in str(info.value)


@pytest.mark.unit
@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not on PATH")
def test_compose_file_resolves_image_from_tag_and_registry(tmp_path: Path) -> None:
    env = _compose_env(tmp_path, ["docker-compose"])
    rt = ComposeRuntime(env, registry="registry.example.com")
    resolved = rt.config("v1.2.3")
    assert "image: registry.example.com/ultra-ai/backend:v1.2.3" in resolved
    assert "image: postgres:15" in resolved and "image: redis:7-alpine" in resolved
    assert "pg-secret-value" not in resolved and "redis-secret-value" not in resolved  # redacted
    assert "ULTRA_ENVIRONMENT: staging" in resolved
    # And exactly what the brief's operator would type, without the runtime in between.
    env_file = tmp_path / "root" / ".env.staging"
    out = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config"],
        env={**os.environ, "ULTRA_IMAGE_TAG": "v1.2.3", "ULTRA_REGISTRY": "registry.example.com/"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "image: registry.example.com/ultra-ai/backend:v1.2.3" in out
    assert "redis-server --appendonly yes --requirepass" in out and "redis-secret-value\n" in out


# Published ports per environment, as deploy/ultra_ops.compose.toml's comment suggests.
_EXAMPLE_ENV_FILES = {
    "staging": "POSTGRES_PASSWORD=pg-staging-secret\nREDIS_PASSWORD=redis-staging-secret\n"
    "ULTRA_BACKEND_PORT=8001\nULTRA_POSTGRES_PORT=5433\nULTRA_REDIS_PORT=6380\n"
    "POSTGRES_USER=ultra\nPOSTGRES_DB=ultra_staging\n"
    "ULTRA_BIND_ADDRESS=172.17.0.1\nULTRA_STORES_BIND_ADDRESS=172.17.0.1\n",
    "production": "POSTGRES_PASSWORD=pg-production-secret\nREDIS_PASSWORD=redis-production-secret\n"
    "POSTGRES_USER=ultra\nPOSTGRES_DB=ultra_prod\n",
}


@pytest.mark.unit
@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not on PATH")
def test_compose_example_config_commands_pass_docker_compose_config(tmp_path: Path) -> None:
    """deploy/ultra_ops.compose.toml, moved from /srv/ultra-ai to a temporary folder with each
    environment's copy of the compose file and env file in place: the command the runtime builds
    for each environment resolves with `docker-compose config`."""
    srv = tmp_path / "srv"
    text = (REPO / "deploy" / "ultra_ops.compose.toml").read_text().replace("/srv/ultra-ai", str(srv))
    config = tmp_path / "ultra_ops.compose.toml"
    config.write_text(text)
    settings = load_settings(config)
    assert list(settings.environments) == ["staging", "production"]
    for env in settings.environments.values():
        assert env.compose_file is not None and env.root in env.compose_file.parents
        env.compose_file.parent.mkdir(parents=True)
        shutil.copy(COMPOSE_FILE, env.compose_file)
        env.env_file.write_text(_EXAMPLE_ENV_FILES[env.name])
        # The example names `docker compose` (the plugin); this machine has the standalone CLI.
        rt = ComposeRuntime(dataclasses.replace(env, compose_command=("docker-compose",)))
        assert rt.config_args() == [
            "docker-compose",
            "-f",
            str(env.compose_file),
            "-p",
            f"ultra-{env.name}",
            "--env-file",
            str(env.env_file),
            "config",
        ]
        resolved = rt.config("v1.2.3")
        assert "image: ultra-ai/backend:v1.2.3" in resolved
        assert f"ULTRA_ENVIRONMENT: {env.name}" in resolved
        assert "-secret" not in resolved  # redacted
        backend_port = {"staging": 8001, "production": 8000}[env.name]
        # Staging's env file publishes on the Docker bridge's address, where run containers reach it;
        # without the two variables everything stays on loopback.
        address = {"staging": "172.17.0.1", "production": "127.0.0.1"}[env.name]
        postgres_port = {"staging": 5433, "production": 5432}[env.name]
        assert f"{address}:{backend_port}:8000/tcp" in resolved
        assert f"{address}:{postgres_port}:5432/tcp" in resolved


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.unit
def test_compose_wait_healthy(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/health"
        get_runtime(_compose_env(tmp_path, ["docker-compose"], health=json.dumps(url))).wait_healthy(5)
    finally:
        server.shutdown()
        server.server_close()
    closed = json.dumps(f"http://127.0.0.1:{free_port()}/health")
    with pytest.raises(RuntimeFailure, match="not healthy after 0.5s"):
        get_runtime(_compose_env(tmp_path, ["docker-compose"], health=closed)).wait_healthy(0.5)
