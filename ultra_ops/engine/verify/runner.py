"""Post-deploy verification: every check of an environment at once, each with a timeout and retries.

Checks are health URLs, the database, Redis, LLM providers and API endpoints. A failed check is a
result, never an exception, so one report always says everything that is wrong. Checks run in
threads: psycopg and redis-py are blocking clients, and a thread per check keeps each check's
retry loop plain sequential code (bench/verify_bench.py measures what that costs).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import EndpointCheck, Environment, LlmProvider

ANTHROPIC_VERSION = "2023-06-01"
# More threads than this buys nothing on one host and only delays the first results.
MAX_WORKERS = 64
MAX_DETAIL = 200  # a detail is a reason for a table cell, not a log dump
_OK_STATUSES = frozenset({"ok", "pass", "passing", "healthy", "up"})


@dataclass(frozen=True)
class CheckResult:
    name: str
    kind: str  # "health" | "database" | "redis" | "llm" | "endpoint"
    ok: bool
    latency_ms: float  # of the last attempt
    attempts: int
    detail: str  # short and already redacted

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["latency_ms"] = round(self.latency_ms, 1)
        return d


@dataclass(frozen=True)
class VerifyReport:
    environment: str
    results: tuple[CheckResult, ...]
    started_at: str  # ISO 8601, UTC
    duration_ms: float  # wall time of the whole verification

    @property
    def ok(self) -> bool:
        # No checks at all proves nothing about the deployment, so it is not a pass.
        return bool(self.results) and all(r.ok for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "ok": self.ok,
            "started_at": self.started_at,
            "duration_ms": round(self.duration_ms, 1),
            "summary": self.summary(),
            "results": [r.to_dict() for r in self.results],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def summary(self) -> str:
        total = len(self.results)
        if not total:
            return f"no checks configured for {self.environment}"
        failed = self.failures
        if not failed:
            return f"all {total} checks passed in {self.duration_ms:.0f} ms"
        reasons = ", ".join(f"{r.name} ({r.detail})" for r in failed)
        return f"{len(failed)} of {total} checks failed: {reasons}"

    def table(self) -> str:
        header = ("CHECK", "KIND", "STATUS", "LATENCY", "ATTEMPTS", "DETAIL")
        rows = [header] + [
            (r.name, r.kind, "ok" if r.ok else "FAIL", f"{r.latency_ms:.0f} ms", str(r.attempts), r.detail)
            for r in self.results
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
                 for row in rows]
        return "\n".join([*lines, "", self.summary()])


class _Fail(Exception):
    """A check's failure with its report detail; `final` skips the remaining retries."""

    def __init__(self, detail: str, *, final: bool = False) -> None:
        super().__init__(detail)
        self.detail, self.final = detail, final


# The failures a check turns into results; anything else is a bug in ultra_ops and propagates.
_EXPECTED = (httpx.HTTPError, psycopg.Error, redis.RedisError, OSError, ValueError)


@dataclass(frozen=True)
class _Check:
    name: str
    kind: str
    run: Callable[[], str]  # returns the success detail or raises _Fail / an expected error


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _describe(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, (httpx.TimeoutException, redis.TimeoutError, TimeoutError)):
        return f"timeout after {timeout_s:g}s"
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return f"query timeout after {timeout_s:g}s"
    # Driver messages can run to several lines (libpq adds hints); the first says what happened.
    text = " ".join(str(exc).strip().splitlines()[0].split()) if str(exc).strip() else ""
    if isinstance(exc, psycopg.OperationalError):
        # libpq prefixes 'connection failed: connection to server at "h", port p failed: FATAL:'.
        text = re.sub(r"^.*failed:\s*(FATAL:\s*)?", "", text)
        return f"cannot connect: {text}" if text else "cannot connect"
    if isinstance(exc, (httpx.ConnectError, redis.ConnectionError)):
        return f"cannot connect: {text}" if text else "cannot connect"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _run_with_retries(check: _Check, retries: int, backoff_s: float, timeout_s: float,
                      redact: Callable[[str], str]) -> CheckResult:
    attempts, latency, ok, detail = 0, 0.0, False, ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        attempts += 1
        start = time.perf_counter()
        final = False
        try:
            detail, ok = check.run(), True
        except _Fail as exc:
            detail, final = exc.detail, exc.final
        except _EXPECTED as exc:
            detail = _describe(exc, timeout_s)
        latency = (time.perf_counter() - start) * 1000
        if ok or final:
            break
    # Redact before shortening: a secret cut in half would no longer match the redactor.
    detail = redact(detail)
    if len(detail) > MAX_DETAIL:
        detail = detail[:MAX_DETAIL - 3] + "..."
    return CheckResult(name=redact(check.name), kind=check.kind, ok=ok, latency_ms=latency,
                       attempts=attempts, detail=detail)


def _timed_request(client: httpx.Client, method: str, url: str, headers: dict[str, str] | None = None,
                   ) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = client.request(method, url, headers=headers)
    return response, time.perf_counter() - start


def _health(client: httpx.Client, url: str) -> Callable[[], str]:
    def run() -> str:
        response, elapsed = _timed_request(client, "GET", url)
        if response.status_code != 200:
            raise _Fail(f"expected 200, got {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            body = None  # a plain-text health page: the 200 is all it says
        if isinstance(body, dict):
            problems = []
            status = body.get("status")
            if status is not None and not _status_ok(status):
                problems.append(f"status {status}")
            bad = _bad_components(body)
            if bad:
                problems.append("not ok: " + ", ".join(bad))
            if problems:
                raise _Fail("; ".join(problems))
        return f"200 in {_ms(elapsed)}"

    return run


def _status_ok(status: object) -> bool:
    # Services spell health differently ("ok", "UP", "pass", true); anything else is a problem.
    if isinstance(status, bool):
        return status
    return str(status).lower() in _OK_STATUSES


def _bad_components(body: dict[str, Any]) -> list[str]:
    """Components whose status is not ok, from {"checks"|"components": {name: {"status": ..}|str}}."""
    bad = []
    for key in ("checks", "components"):
        components = body.get(key)
        if not isinstance(components, dict):
            continue
        for name, value in components.items():
            status = value.get("status") if isinstance(value, dict) else value
            if status is not None and not _status_ok(status):
                bad.append(f"{name} ({status})")
    return bad


def _endpoint(client: httpx.Client, ep: EndpointCheck) -> Callable[[], str]:
    def run() -> str:
        response, elapsed = _timed_request(client, ep.method, ep.url)
        if response.status_code != ep.expect_status:
            raise _Fail(f"expected {ep.expect_status}, got {response.status_code}")
        if ep.latency_budget_ms is not None and elapsed * 1000 > ep.latency_budget_ms:
            raise _Fail(f"latency {_ms(elapsed)} over budget {ep.latency_budget_ms:.0f} ms")
        return f"{response.status_code} in {_ms(elapsed)}"

    return run


def _llm(client: httpx.Client, provider: LlmProvider) -> Callable[[], str]:
    def run() -> str:
        key = os.environ.get(provider.api_key_env)
        if not key:
            raise _Fail(f"{provider.api_key_env} is not set", final=True)
        if provider.auth == "x-api-key":
            headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
        else:
            headers = {"Authorization": f"Bearer {key}"}
        response, elapsed = _timed_request(client, "GET", provider.models_url, headers)
        if response.status_code in (401, 403):
            # Retrying a rejected key only adds noise to the provider's abuse detection.
            raise _Fail(f"key rejected ({response.status_code})", final=True)
        if response.status_code != 200:
            raise _Fail(f"expected 200, got {response.status_code}")
        try:
            models = response.json().get("data")
        except (ValueError, AttributeError):
            raise _Fail("answer is not a JSON model list") from None
        if not isinstance(models, list) or not models:
            raise _Fail("answer lists no models")
        return f"200 in {_ms(elapsed)}, {len(models)} models"

    return run


def _database(env: Environment, timeout_s: float) -> Callable[[], str]:
    db = env.database

    def run() -> str:
        start = time.perf_counter()
        info = db.conninfo()
        # libpq only takes whole seconds and treats anything below 2 as 2.
        info["connect_timeout"] = max(2, math.ceil(timeout_s))
        info["options"] = f"-c statement_timeout={max(1, int(timeout_s * 1000))}"
        with psycopg.connect(**info, autocommit=True) as conn:
            for query in db.probe_queries:
                cur = conn.execute(query)
                if cur.description is not None:
                    cur.fetchall()
        elapsed = time.perf_counter() - start
        if elapsed * 1000 > db.latency_budget_ms:
            raise _Fail(f"latency {_ms(elapsed)} over budget {db.latency_budget_ms:.0f} ms")
        n = len(db.probe_queries)
        return f"connect and {n} quer{'y' if n == 1 else 'ies'} in {_ms(elapsed)}"

    return run


def _redis(env: Environment, timeout_s: float) -> Callable[[], str]:
    settings = env.redis
    assert settings is not None

    def run() -> str:
        password = None
        if settings.password_env:
            password = os.environ.get(settings.password_env)
            if not password:
                raise _Fail(f"{settings.password_env} is not set", final=True)
        start = time.perf_counter()
        # redis-py retries on its own by default; ours are the only retries, so attempts stay countable.
        client = redis.Redis.from_url(settings.url, username=settings.username, password=password,
                                      socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                      retry=Retry(NoBackoff(), 0))
        try:
            try:
                pong = client.ping()
            except redis.AuthenticationError:
                raise _Fail("authentication failed", final=True) from None
        finally:
            client.close()
        elapsed = time.perf_counter() - start
        if pong is not True:
            raise _Fail(f"PING answered {pong!r}")
        return f"PONG in {_ms(elapsed)}"

    return run


def _checks(env: Environment, client: httpx.Client) -> list[_Check]:
    v = env.verify
    checks = [_Check(f"health {url}", "health", _health(client, url)) for url in v.health_urls]
    checks.append(_Check("database", "database", _database(env, v.timeout_s)))
    if env.redis is not None:
        checks.append(_Check("redis", "redis", _redis(env, v.timeout_s)))
    checks += [_Check(f"llm {p.name}", "llm", _llm(client, p)) for p in env.llm_providers]
    checks += [_Check(f"endpoint {ep.name}", "endpoint", _endpoint(client, ep)) for ep in v.endpoints]
    return checks


@functools.lru_cache(maxsize=1)
def _trusted_tls() -> ssl.SSLContext:
    # Loading the CA bundle costs ~100 ms of CPU; once per process is enough (contexts are shareable).
    return httpx.create_ssl_context()


def _tls_for(urls: list[str]) -> ssl.SSLContext:
    if any(u.lower().startswith("https://") for u in urls):
        return _trusted_tls()
    # Only plain-http URLs to check, so skip the CA bundle. This context trusts no certificate at
    # all: should TLS ever be attempted with it, it fails closed rather than unverified.
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _redactor(env: Environment, redact: Redactor | None) -> Callable[[str], str]:
    # Also mask the secrets the checks themselves read, even when the caller's redactor misses them.
    own = Redactor(os.environ.get(name, "") for name in env.secret_env_names())
    if redact is None:
        return own
    return lambda text: own(redact(text))


def verify_environment(env: Environment, *, redact: Redactor | None = None,
                       log: Log | None = None) -> VerifyReport:
    """Run every configured check of `env` concurrently and return the report; never raises for a failure."""
    log = log or NullLog()
    clean = _redactor(env, redact if redact is not None else Redactor.for_environment(env))
    v = env.verify
    started_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    start = time.perf_counter()
    timeout = httpx.Timeout(v.timeout_s)
    urls = [*v.health_urls, *(ep.url for ep in v.endpoints), *(p.models_url for p in env.llm_providers)]
    http_checks = len(urls)
    # One connection per concurrent check, so no check waits for another's connection.
    limits = httpx.Limits(max_connections=max(http_checks, 1), max_keepalive_connections=max(http_checks, 1))
    results: dict[int, CheckResult] = {}
    with httpx.Client(timeout=timeout, limits=limits, follow_redirects=False, verify=_tls_for(urls)) as client:
        checks = _checks(env, client)
        with ThreadPoolExecutor(max_workers=min(len(checks), MAX_WORKERS),
                                thread_name_prefix="verify") as pool:
            # Checks start only once all are submitted: otherwise the first checks' CPU work holds
            # the GIL while the pool is still starting threads for the rest (bench/verify_bench.py).
            go = threading.Event()

            def gated(check: _Check) -> CheckResult:
                go.wait()
                return _run_with_retries(check, v.retries, v.backoff_s, v.timeout_s, clean)

            try:
                futures = {pool.submit(gated, c): i for i, c in enumerate(checks)}
            finally:
                go.set()
            # Logging happens here, in the caller's thread: Dagster's context.log is not meant for
            # worker threads, and lines still appear as soon as each check finishes.
            for future in as_completed(futures):
                result = future.result()
                results[futures[future]] = result
                line = (f"verify {env.name}: {result.name}: {'ok' if result.ok else 'FAILED'} "
                        f"({result.detail}; {result.attempts} attempt{'s' if result.attempts != 1 else ''})")
                (log.info if result.ok else log.warning)(clean(line))
    duration = (time.perf_counter() - start) * 1000
    ordered = tuple(results[i] for i in range(len(results)))
    return VerifyReport(environment=env.name, results=ordered, started_at=started_at, duration_ms=duration)
