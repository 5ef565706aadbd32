"""The sample Ultra AI backend as a real process against real PostgreSQL and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from conftest import PG, REDIS_URL, free_port, write_config

from ultra_ops.engine.release.migrate import apply_migrations
from ultra_ops.engine.settings import load_settings

Start = Callable[..., tuple[subprocess.Popen[bytes], str]]


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Start]:
    """Start the service with the given overrides; every process is stopped afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(database: str, **overrides: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        env = {**os.environ, "PORT": str(port), "ULTRA_VERSION": "v1.0.0", "ULTRA_ENVIRONMENT": "staging",
               "ULTRA_LOG_DIR": str(tmp_path / "logs"), "PGHOST": PG["host"], "PGPORT": str(PG["port"]),
               "PGUSER": PG["user"], "PGDATABASE": database, "REDIS_URL": REDIS_URL, **overrides}
        proc = subprocess.Popen([sys.executable, "-m", "ultra_ops.sample_service"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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
