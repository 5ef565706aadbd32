"""The sample Ultra AI backend: stdlib HTTP server, PostgreSQL through libpq's PG* variables,
Redis through REDIS_URL / REDIS_USERNAME / REDIS_PASSWORD.

Connections are short-lived, one per request: the service is tiny and this way a database that
restarts (restore, rollback) never leaves it holding a dead connection.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import redis

LOG_NAME = "backend.log"
_TIMEOUT_S = 3

log = logging.getLogger("ultra_ops.sample_service")


@dataclass(frozen=True)
class ServiceConfig:
    port: int
    version: str
    environment: str
    log_dir: Path | None
    redis_url: str | None
    redis_username: str | None
    redis_password: str | None
    redis_prefix: str

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServiceConfig:
        e = dict(os.environ if environ is None else environ)
        environment = e.get("ULTRA_ENVIRONMENT", "development")
        return cls(
            port=int(e.get("PORT", "8000")),
            version=e.get("ULTRA_VERSION", "dev"),
            environment=environment,
            log_dir=Path(e["ULTRA_LOG_DIR"]) if e.get("ULTRA_LOG_DIR") else None,
            redis_url=e.get("REDIS_URL") or None,
            redis_username=e.get("REDIS_USERNAME") or None,
            redis_password=e.get("REDIS_PASSWORD") or None,
            redis_prefix=e.get("ULTRA_REDIS_PREFIX") or f"ultra:{environment}:",
        )


class Backend:
    """What the endpoints do, apart from HTTP."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config

    def _pg(self) -> psycopg.Connection[Any]:
        # No arguments: libpq reads PGHOST/PGPORT/PGUSER/PGDATABASE/PGPASSWORD itself.
        return psycopg.connect(connect_timeout=_TIMEOUT_S, autocommit=True)

    def _redis(self) -> redis.Redis:
        if not self.config.redis_url:
            raise RuntimeError("REDIS_URL is not set")
        return redis.Redis.from_url(
            self.config.redis_url, username=self.config.redis_username,
            password=self.config.redis_password, socket_timeout=_TIMEOUT_S,
            socket_connect_timeout=_TIMEOUT_S)

    def check_postgres(self) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            with self._pg() as conn:
                conn.execute("SELECT 1").fetchone()
        except Exception as exc:  # a health check reports every failure, it does not raise
            return {"status": "error", "error": _short(exc), "latency_ms": _ms(start)}
        return {"status": "ok", "latency_ms": _ms(start)}

    def check_redis(self) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            client = self._redis()
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:
            return {"status": "error", "error": _short(exc), "latency_ms": _ms(start)}
        return {"status": "ok", "latency_ms": _ms(start)}

    def health(self, detail: bool) -> tuple[int, dict[str, Any]]:
        if not detail:
            return 200, {"status": "ok", "version": self.config.version}
        checks = {"postgres": self.check_postgres(), "redis": self.check_redis()}
        ok = all(c["status"] == "ok" for c in checks.values())
        body = {"status": "ok" if ok else "degraded", "version": self.config.version,
                "environment": self.config.environment, "checks": checks}
        return (200 if ok else 503), body

    def prompts(self) -> tuple[int, dict[str, Any]]:
        try:
            with self._pg() as conn:
                rows = conn.execute("SELECT id, title FROM prompts ORDER BY id").fetchall()
        except Exception as exc:
            log.warning("prompts query failed: %s", _short(exc))
            return 500, {"error": f"prompts query failed: {_short(exc)}"}
        try:
            client = self._redis()
            try:
                client.set(self.config.redis_prefix + "prompts:count", len(rows))
            finally:
                client.close()
        except Exception as exc:
            # The cache is an optimisation: the answer is still right without it.
            log.warning("caching the prompt count failed: %s", _short(exc))
        return 200, {"version": self.config.version,
                     "prompts": [{"id": r[0], "title": r[1]} for r in rows]}

    def version(self) -> tuple[int, dict[str, Any]]:
        return 200, {"version": self.config.version, "environment": self.config.environment}


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class Handler(BaseHTTPRequestHandler):
    server_version = "UltraAI-sample"
    backend: Backend  # set on the subclass that make_server builds

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/health":
            detail = query.get("detail", ["false"])[0].lower() in ("1", "true", "yes")
            status, body = self.backend.health(detail)
        elif url.path == "/api/v1/prompts":
            status, body = self.backend.prompts()
        elif url.path == "/api/v1/version":
            status, body = self.backend.version()
        else:
            status, body = 404, {"error": f"not found: {url.path}"}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        # One access line per request into the service log instead of stderr.
        log.info("%s %s", self.address_string(), format % args)


def make_server(config: ServiceConfig) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"backend": Backend(config)})
    server = ThreadingHTTPServer(("127.0.0.1", config.port), handler)
    server.daemon_threads = True
    return server


def _setup_logging(config: ServiceConfig) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if config.log_dir is not None:
        config.log_dir.mkdir(parents=True, exist_ok=True)
        # Watched: when log archiving moves backend.log away, the next line starts a new file.
        handlers = [logging.handlers.WatchedFileHandler(config.log_dir / LOG_NAME, encoding="utf-8")]
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s backend: %(message)s")


def main() -> int:
    config = ServiceConfig.from_env()
    _setup_logging(config)
    server = make_server(config)

    def stop(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever to return, so it cannot run in the loop's own thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("starting Ultra AI sample backend version=%s environment=%s port=%d pid=%d",
             config.version, config.environment, config.port, os.getpid())
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    log.info("stopped")
    logging.shutdown()
    return 0
