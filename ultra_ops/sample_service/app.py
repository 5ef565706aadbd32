"""The sample Ultra AI backend: stdlib HTTP server, PostgreSQL through libpq's PG* variables,
Redis through REDIS_URL / REDIS_USERNAME / REDIS_PASSWORD.

What a release is checked against lives here too: a login and a protected endpoint
(ULTRA_AUTH_PASSWORD), a rate limit on the API (ULTRA_RATE_LIMIT), a prompt answered by an
OpenAI-compatible provider (ULTRA_LLM_URL), file uploads (ULTRA_UPLOAD_DIR) and /metrics.
ULTRA_DEGRADE_AFTER_S makes a release that goes bad that many seconds after it starts (its detailed
health and its API answer 503 from then on): what a verification window catches and one pass misses.
With ULTRA_DEGRADE_VERSION only that version does, so the release before it, rolled back to, does not.

Connections are short-lived, one per request: the service is tiny and this way a database that
restarts (restore, rollback) never leaves it holding a dead connection.
"""

from __future__ import annotations

import hashlib
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

from ultra_ops.sample_service import llm
from ultra_ops.sample_service.auth import Auth
from ultra_ops.sample_service.metrics import Metrics
from ultra_ops.sample_service.ratelimit import RateLimit

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
    auth_user: str = "admin"
    auth_password: str | None = None
    rate_limit: str | None = None
    llm_url: str | None = None
    llm_api_key: str | None = None
    llm_model: str = "stand-in-small"
    upload_dir: Path | None = None
    upload_max_bytes: int = 1_048_576
    degrade_after_s: float | None = None
    # Loopback as a local process; 0.0.0.0 in a container, whose port Docker publishes.
    host: str = "127.0.0.1"

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
            auth_user=e.get("ULTRA_AUTH_USER") or "admin",
            auth_password=e.get("ULTRA_AUTH_PASSWORD") or None,
            rate_limit=e.get("ULTRA_RATE_LIMIT") or None,
            llm_url=e.get("ULTRA_LLM_URL") or None,
            llm_api_key=e.get("ULTRA_LLM_API_KEY") or None,
            llm_model=e.get("ULTRA_LLM_MODEL") or "stand-in-small",
            upload_dir=Path(e["ULTRA_UPLOAD_DIR"]) if e.get("ULTRA_UPLOAD_DIR") else None,
            upload_max_bytes=int(e.get("ULTRA_UPLOAD_MAX_BYTES") or 1_048_576),
            degrade_after_s=float(e["ULTRA_DEGRADE_AFTER_S"])
            if e.get("ULTRA_DEGRADE_AFTER_S")
            and e.get("ULTRA_DEGRADE_VERSION", e.get("ULTRA_VERSION", "dev")) == e.get("ULTRA_VERSION", "dev")
            else None,
            host=e.get("ULTRA_BIND_HOST") or "127.0.0.1",
        )


class Backend:
    """What the endpoints do, apart from HTTP."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.auth = Auth(config.auth_user, config.auth_password)
        self.rate_limit = RateLimit.parse(config.rate_limit)
        self.metrics = Metrics()
        self.started = time.monotonic()

    def degraded(self) -> bool:
        after = self.config.degrade_after_s
        return after is not None and time.monotonic() - self.started >= after

    def _pg(self) -> psycopg.Connection[Any]:
        # No arguments: libpq reads PGHOST/PGPORT/PGUSER/PGDATABASE/PGPASSWORD itself.
        return psycopg.connect(connect_timeout=_TIMEOUT_S, autocommit=True)

    def _redis(self) -> redis.Redis:
        if not self.config.redis_url:
            raise RuntimeError("REDIS_URL is not set")
        return redis.Redis.from_url(
            self.config.redis_url,
            username=self.config.redis_username,
            password=self.config.redis_password,
            socket_timeout=_TIMEOUT_S,
            socket_connect_timeout=_TIMEOUT_S,
        )

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
        if self.degraded():
            checks["release"] = {"status": "error", "error": f"degraded {self.config.degrade_after_s:g}s after start"}
        ok = all(c["status"] == "ok" for c in checks.values())
        body = {
            "status": "ok" if ok else "degraded",
            "version": self.config.version,
            "environment": self.config.environment,
            "checks": checks,
        }
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
        return 200, {"version": self.config.version, "prompts": [{"id": r[0], "title": r[1]} for r in rows]}

    def version(self) -> tuple[int, dict[str, Any]]:
        return 200, {"version": self.config.version, "environment": self.config.environment}

    def login(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not self.auth.enabled:
            return 404, {"error": "authentication is disabled"}
        token = self.auth.login(body.get("username"), body.get("password"))
        if token is None:
            return 401, {"error": "invalid username or password"}
        return 200, {"token": token, "token_type": "bearer", "expires_in": 3600}

    def me(self, user: str) -> tuple[int, dict[str, Any]]:
        return 200, {"user": user}

    def prompt(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        text = body.get("prompt")
        if not isinstance(text, str) or not text.strip():
            return 400, {"error": "prompt must be a non-empty string"}
        max_tokens = body.get("max_tokens", 64)
        if not isinstance(max_tokens, int) or not 1 <= max_tokens <= 4096:
            return 400, {"error": "max_tokens must be an integer from 1 to 4096"}
        if not self.config.llm_url:
            return 503, {"error": "no LLM provider configured (ULTRA_LLM_URL)"}
        try:
            answer = llm.complete(self.config.llm_url, self.config.llm_api_key, self.config.llm_model, text, max_tokens)
        except llm.LLMError as exc:
            log.warning("prompt failed: %s", exc)
            return 502, {"error": str(exc)}
        self.metrics.llm_request(answer.seconds)
        self.metrics.count("prompts")
        return 200, {
            "response": answer.text,
            "model": answer.model,
            "usage": answer.usage,
            "latency_ms": round(answer.seconds * 1000, 2),
        }

    def upload(self, data: bytes, filename: str | None) -> tuple[int, dict[str, Any]]:
        folder = self.config.upload_dir
        if folder is None:
            return 404, {"error": "uploads are disabled"}
        digest = hashlib.sha256(data).hexdigest()
        file_id = digest[:16]
        folder.mkdir(parents=True, exist_ok=True)
        # Named by content, written under a temporary name and renamed: a half-written upload is
        # never visible, and the client's file name never becomes a path.
        tmp = folder / f".{file_id}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_bytes(data)
        tmp.replace(folder / file_id)
        self.metrics.count("uploads")
        log.info("upload %s: %d bytes (%s)", file_id, len(data), (filename or "unnamed")[:80])
        return 201, {"id": file_id, "size": len(data), "sha256": digest}


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# Paths under /api/ that are answered without a token: the login itself, and the read-only
# endpoints that health checks and older clients call.
_OPEN_API = frozenset({"/api/v1/auth/login", "/api/v1/prompts", "/api/v1/version"})


class Handler(BaseHTTPRequestHandler):
    server_version = "UltraAI-sample"
    backend: Backend  # set on the subclass that make_server builds

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        path, b = url.path, self.backend
        headers: dict[str, str] = {}
        body: bytes = b""
        if method == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            if length > max(b.config.upload_max_bytes, 65536):
                self._send(path, 413, {"error": f"request body over {b.config.upload_max_bytes} bytes"})
                return
            body = self.rfile.read(length) if length else b""
        if path.startswith("/api/") and b.rate_limit is not None:
            wait = b.rate_limit.retry_after(self.client_address[0])
            if wait:
                b.metrics.count("rate_limited")
                self._send(path, 429, {"error": "rate limit exceeded"}, {"Retry-After": str(wait)})
                return
        if path.startswith("/api/") and b.degraded():
            self._send(path, 503, {"error": "degraded"})
            return
        user = None
        if path.startswith("/api/") and path not in _OPEN_API:
            user = b.auth.user_for(self.headers.get("Authorization"))
            if user is None:
                self._send(path, 401, {"error": "authentication required"}, {"WWW-Authenticate": "Bearer"})
                return
        if method == "GET" and path == "/metrics":
            self._send(path, 200, b.metrics.render(), {"Content-Type": "text/plain; version=0.0.4"})
            return
        status, answer = self._route(method, path, parse_qs(url.query), body, user)
        self._send(path, status, answer, headers)

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, user: str | None
    ) -> tuple[int, dict[str, Any]]:
        b = self.backend
        if method == "GET":
            if path == "/health":
                return b.health(query.get("detail", ["false"])[0].lower() in ("1", "true", "yes"))
            if path == "/api/v1/prompts":
                return b.prompts()
            if path == "/api/v1/version":
                return b.version()
            if path == "/api/v1/me" and user is not None:
                return b.me(user)
        elif path == "/api/v1/files":
            if len(body) > b.config.upload_max_bytes:
                return 413, {"error": f"file over {b.config.upload_max_bytes} bytes"}
            return b.upload(body, self.headers.get("X-Filename"))
        elif path in ("/api/v1/auth/login", "/api/v1/prompt"):
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                return 400, {"error": "body is not JSON"}
            if not isinstance(data, dict):
                return 400, {"error": "body must be a JSON object"}
            return b.login(data) if path == "/api/v1/auth/login" else b.prompt(data)
        return 404, {"error": f"not found: {method} {path}"}

    def _send(self, path: str, status: int, body: dict[str, Any] | str, headers: dict[str, str] | None = None) -> None:
        self.backend.metrics.request(path, status)
        payload = (body if isinstance(body, str) else json.dumps(body)).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        # One access line per request into the service log instead of stderr.
        log.info("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: a burst of new connections (HTTP/1.0 closes each one)
    # overflows it, and the kernel drops SYNs that the client resends only after 1 s. Performance
    # verification at concurrency 4 saw exactly that as a p95 of 1050 ms.
    request_queue_size = 128
    daemon_threads = True


def make_server(config: ServiceConfig) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"backend": Backend(config)})
    return _Server((config.host, config.port), handler)


def _setup_logging(config: ServiceConfig) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if config.log_dir is not None:
        config.log_dir.mkdir(parents=True, exist_ok=True)
        # Watched: when log archiving moves backend.log away, the next line starts a new file.
        handlers = [logging.handlers.WatchedFileHandler(config.log_dir / LOG_NAME, encoding="utf-8")]
    logging.basicConfig(
        level=logging.INFO, handlers=handlers, force=True, format="%(asctime)s %(levelname)s backend: %(message)s"
    )


def main() -> int:
    config = ServiceConfig.from_env()
    _setup_logging(config)
    server = make_server(config)

    def stop(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever to return, so it cannot run in the loop's own thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "starting Ultra AI sample backend version=%s environment=%s port=%d pid=%d",
        config.version,
        config.environment,
        config.port,
        os.getpid(),
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    log.info("stopped")
    logging.shutdown()
    return 0
