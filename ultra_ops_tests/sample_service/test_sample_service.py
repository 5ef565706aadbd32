"""The sample Ultra AI backend as a real process against real PostgreSQL and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from ultra_ops.engine.release.migrate import apply_migrations
from ultra_ops.engine.settings import load_settings
from ultra_ops.sample_service.llm_standin import make_server as llm_standin_server
from ultra_ops.sample_service.ratelimit import RateLimit
from ultra_ops_tests.support.configs import write_config
from ultra_ops_tests.support.ports import free_port
from ultra_ops_tests.support.services import PG, REDIS_URL

Start = Callable[..., tuple[subprocess.Popen[bytes], str]]


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Start]:
    """Start the service with the given overrides; every process is stopped afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(database: str, **overrides: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        env = {
            **os.environ,
            "PORT": str(port),
            "ULTRA_VERSION": "v1.0.0",
            "ULTRA_ENVIRONMENT": "staging",
            "ULTRA_LOG_DIR": str(tmp_path / "logs"),
            "PGHOST": PG["host"],
            "PGPORT": str(PG["port"]),
            "PGUSER": PG["user"],
            "PGDATABASE": database,
            "REDIS_URL": REDIS_URL,
            **overrides,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "ultra_ops.sample_service"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                httpx.get(base + "/health", timeout=1)
                return proc, base
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                time.sleep(0.05)
        raise AssertionError("sample service did not start")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture
def migrated(tmp_path: Path, pg_database: str) -> str:
    apply_migrations(load_settings(write_config(tmp_path, pg_database)).environment("staging"))
    return pg_database


def test_endpoints(start_service: Start, migrated: str, redis_prefix: str, tmp_path: Path) -> None:
    proc, base = start_service(migrated, ULTRA_REDIS_PREFIX=redis_prefix)

    r = httpx.get(base + "/health")
    assert r.status_code == 200 and r.json() == {"status": "ok", "version": "v1.0.0"}

    r = httpx.get(base + "/health", params={"detail": "true"})
    body = r.json()
    assert r.status_code == 200, body
    assert body["status"] == "ok" and body["version"] == "v1.0.0" and body["environment"] == "staging"
    assert set(body["checks"]) == {"postgres", "redis"}
    for check in body["checks"].values():
        assert check["status"] == "ok" and check["latency_ms"] >= 0

    r = httpx.get(base + "/api/v1/prompts")
    assert r.status_code == 200
    prompts = r.json()["prompts"]
    assert r.json()["version"] == "v1.0.0"
    assert len(prompts) >= 3 and {"id", "title"} <= set(prompts[0])
    cached = redis.Redis.from_url(REDIS_URL).get(redis_prefix + "prompts:count")
    assert cached is not None and int(cached) == len(prompts)

    assert httpx.get(base + "/api/v1/version").json()["version"] == "v1.0.0"
    assert httpx.get(base + "/nope").status_code == 404

    log = (tmp_path / "logs" / "backend.log").read_text()
    assert "starting" in log and "v1.0.0" in log
    assert "GET /api/v1/prompts" in log and "GET /nope" in log

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_degraded_when_database_missing(start_service: Start, pg_database: str) -> None:
    _, base = start_service(pg_database + "_missing")
    assert httpx.get(base + "/health").status_code == 200  # liveness does not depend on the database
    r = httpx.get(base + "/health", params={"detail": "true"})
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "degraded"
    assert body["checks"]["postgres"]["status"] == "error" and body["checks"]["redis"]["status"] == "ok"


def test_prompts_error_without_table(start_service: Start, pg_database: str) -> None:
    _, base = start_service(pg_database)  # not migrated
    r = httpx.get(base + "/api/v1/prompts")
    assert r.status_code == 500 and "prompts" in r.json()["error"]


@pytest.fixture
def llm_standin() -> Iterator[str]:
    """The LLM stand-in on its own port, requiring a key."""
    server = llm_standin_server(free_port(), api_key="sk-test-standin")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not on the metrics page")


def test_login_protected_prompt_upload_and_metrics(
    start_service: Start, pg_database: str, llm_standin: str, tmp_path: Path
) -> None:
    _, base = start_service(
        pg_database,
        ULTRA_AUTH_PASSWORD="s3cret-pw",
        ULTRA_LLM_URL=llm_standin,
        ULTRA_LLM_API_KEY="sk-test-standin",
        ULTRA_UPLOAD_DIR=str(tmp_path / "uploads"),
        ULTRA_UPLOAD_MAX_BYTES="1000",
    )
    # The protected endpoint refuses a request without a token, or with a forged one.
    r = httpx.get(base + "/api/v1/me")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    assert httpx.get(base + "/api/v1/me", headers={"Authorization": "Bearer abc.def"}).status_code == 401
    assert httpx.post(base + "/api/v1/prompt", json={"prompt": "hi"}).status_code == 401

    bad = httpx.post(base + "/api/v1/auth/login", json={"username": "admin", "password": "wrong"})
    assert bad.status_code == 401 and "s3cret" not in bad.text
    login = httpx.post(base + "/api/v1/auth/login", json={"username": "admin", "password": "s3cret-pw"})
    assert login.status_code == 200, login.text
    auth = {"Authorization": "Bearer " + login.json()["token"]}
    assert httpx.get(base + "/api/v1/me", headers=auth).json() == {"user": "admin"}

    before = httpx.get(base + "/metrics").text
    r = httpx.post(base + "/api/v1/prompt", json={"prompt": "three little words"}, headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["response"] == "stand-in answer: your prompt has 3 words"
    assert body["usage"]["prompt_tokens"] == 3 and body["latency_ms"] >= 0
    assert httpx.post(base + "/api/v1/prompt", json={"prompt": ""}, headers=auth).status_code == 400

    r = httpx.post(base + "/api/v1/files", content=b"hello upload", headers={**auth, "X-Filename": "../x"})
    assert r.status_code == 201, r.text
    stored = tmp_path / "uploads" / r.json()["id"]
    assert stored.read_bytes() == b"hello upload" and r.json()["size"] == 12
    assert httpx.post(base + "/api/v1/files", content=b"x" * 1001, headers=auth).status_code == 413

    after = httpx.get(base + "/metrics")
    assert after.headers["Content-Type"].startswith("text/plain")
    assert _metric(after.text, "ultra_prompts_total") == _metric(before, "ultra_prompts_total") + 1
    assert _metric(after.text, "ultra_uploads_total") == 1
    assert _metric(after.text, "ultra_llm_request_seconds_count") == 1
    assert 'ultra_http_requests_total{path="/api/v1/me",status="401"} 2' in after.text


def test_prompt_reports_a_failing_provider(start_service: Start, pg_database: str, llm_standin: str) -> None:
    _, base = start_service(pg_database, ULTRA_LLM_URL=llm_standin, ULTRA_LLM_API_KEY="sk-wrong-key")
    r = httpx.post(base + "/api/v1/prompt", json={"prompt": "hi"})  # auth off: open
    assert r.status_code == 502 and r.json()["error"] == "LLM provider answered HTTP 401"
    assert "sk-wrong-key" not in r.text
    _, unconfigured = start_service(pg_database)
    assert httpx.post(unconfigured + "/api/v1/prompt", json={"prompt": "hi"}).status_code == 503
    assert httpx.post(unconfigured + "/api/v1/files", content=b"x").status_code == 404
    assert httpx.post(unconfigured + "/api/v1/auth/login", json={}).status_code == 404


def test_rate_limit_on_api_only(start_service: Start, pg_database: str) -> None:
    _, base = start_service(pg_database, ULTRA_RATE_LIMIT="5/60")
    statuses = [httpx.get(base + "/api/v1/version").status_code for _ in range(8)]
    assert statuses == [200] * 5 + [429] * 3
    limited = httpx.get(base + "/api/v1/version")
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
    # Health and metrics stay answerable, so monitoring never trips the limit.
    assert all(httpx.get(base + "/health").status_code == 200 for _ in range(8))
    assert _metric(httpx.get(base + "/metrics").text, "ultra_rate_limited_total") == 4


@pytest.mark.unit
def test_bad_rate_limit_is_named() -> None:
    with pytest.raises(ValueError, match="ULTRA_RATE_LIMIT must look like 20/1"):
        RateLimit.parse("twenty")


def test_degrades_after_the_configured_delay(start_service: Start, migrated: str, redis_prefix: str) -> None:
    proc, base = start_service(migrated, ULTRA_REDIS_PREFIX=redis_prefix, ULTRA_DEGRADE_AFTER_S="1.5")
    first = httpx.get(base + "/health", params={"detail": "true"})
    started = time.monotonic()
    assert first.status_code == 200 and "release" not in first.json()["checks"]
    deadline = started + 20
    while True:  # wait on the event: the detailed health turning 503
        r = httpx.get(base + "/health", params={"detail": "true"})
        if r.status_code == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.status_code == 503 and r.json()["checks"]["release"]["status"] == "error"
    assert httpx.get(base + "/api/v1/prompts").status_code == 503
    assert httpx.get(base + "/health").status_code == 200  # still alive: only the release went bad


@pytest.mark.unit
def test_degrades_only_as_the_version_named() -> None:
    from ultra_ops.sample_service.app import ServiceConfig

    named = {"ULTRA_DEGRADE_AFTER_S": "5", "ULTRA_DEGRADE_VERSION": "v1.1.0"}
    assert ServiceConfig.from_env({**named, "ULTRA_VERSION": "v1.1.0"}).degrade_after_s == 5
    assert ServiceConfig.from_env({**named, "ULTRA_VERSION": "v1.0.0"}).degrade_after_s is None
    assert ServiceConfig.from_env({"ULTRA_DEGRADE_AFTER_S": "5"}).degrade_after_s == 5
