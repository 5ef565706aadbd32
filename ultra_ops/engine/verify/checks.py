"""The individual checks of a verification: health URLs, API endpoints, LLM providers, the database, Redis.

A check is a function that returns its success detail or raises: CheckFailed with the report's
detail, or one of expected_errors(), which describe_error turns into a detail.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.settings import EndpointCheck, Environment, LlmProvider

psycopg = lazy_module("psycopg")
httpx = lazy_module("httpx")
redis = lazy_module("redis")

ANTHROPIC_VERSION = "2023-06-01"
_OK_STATUSES = frozenset({"ok", "pass", "passing", "healthy", "up"})


class CheckFailed(Exception):
    """A check's failure with its report detail; `final` skips the remaining retries."""

    def __init__(self, detail: str, *, final: bool = False) -> None:
        super().__init__(detail)
        self.detail, self.final = detail, final


# The failures a check turns into results; anything else is a bug in ultra_ops and propagates.
def expected_errors() -> tuple[type[BaseException], ...]:
    """What a check may raise as its answer (a function: naming them imports the clients)."""
    return (httpx.HTTPError, psycopg.Error, redis.RedisError, OSError, ValueError)


@dataclass(frozen=True)
class Check:
    name: str
    kind: str
    run: Callable[[], str]  # returns the success detail or raises CheckFailed / an expected error


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def describe_error(exc: BaseException, timeout_s: float) -> str:
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


def _timed_request(
    client: httpx.Client,
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = client.request(method, url, headers=headers)
    return response, time.perf_counter() - start


def _health(client: httpx.Client, url: str) -> Callable[[], str]:
    def run() -> str:
        response, elapsed = _timed_request(client, "GET", url)
        if response.status_code != 200:
            raise CheckFailed(f"expected 200, got {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            body = None  # a plain-text health page: the 200 is all it says
        if isinstance(body, dict):
            problems = []
            status = body.get("status")
            if status is not None and not status_ok(status):
                problems.append(f"status {status}")
            bad = bad_components(body)
            if bad:
                problems.append("not ok: " + ", ".join(bad))
            if problems:
                raise CheckFailed("; ".join(problems))
        return f"200 in {_ms(elapsed)}"

    return run


def status_ok(status: object) -> bool:
    # Services spell health differently ("ok", "UP", "pass", true); anything else is a problem.
    if isinstance(status, bool):
        return status
    return str(status).lower() in _OK_STATUSES


def bad_components(body: dict[str, Any]) -> list[str]:
    """Components whose status is not ok, from {"checks"|"components": {name: {"status": ..}|str}}."""
    bad = []
    for key in ("checks", "components"):
        components = body.get(key)
        if not isinstance(components, dict):
            continue
        for name, value in components.items():
            status = value.get("status") if isinstance(value, dict) else value
            if status is not None and not status_ok(status):
                bad.append(f"{name} ({status})")
    return bad


def _endpoint(client: httpx.Client, ep: EndpointCheck) -> Callable[[], str]:
    def run() -> str:
        response, elapsed = _timed_request(client, ep.method, ep.url)
        if response.status_code != ep.expect_status:
            raise CheckFailed(f"expected {ep.expect_status}, got {response.status_code}")
        if ep.latency_budget_ms is not None and elapsed * 1000 > ep.latency_budget_ms:
            raise CheckFailed(f"latency {_ms(elapsed)} over budget {ep.latency_budget_ms:.0f} ms")
        return f"{response.status_code} in {_ms(elapsed)}"

    return run


def llm_headers(provider: LlmProvider) -> dict[str, str]:
    """The provider's authentication headers, the key from the environment; CheckFailed when unset."""
    if provider.auth == "none" or provider.api_key_env is None:
        return {}
    key = os.environ.get(provider.api_key_env)
    if not key:
        raise CheckFailed(f"{provider.api_key_env} is not set", final=True)
    if key != key.strip() or any(ord(c) < 0x20 or c == "\x7f" for c in key):
        # A CRLF env file or a pasted line: no HTTP client sends it, and the provider would not take
        # it either. Said without the key (the client's own error quotes the whole header).
        raise CheckFailed(
            f"{provider.api_key_env} has white space or a line ending (CR?) around the key, or a control character",
            final=True,
        )
    if provider.auth == "x-api-key":
        return {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
    return {"Authorization": f"Bearer {key}"}


def _llm(client: httpx.Client, provider: LlmProvider) -> Callable[[], str]:
    def run() -> str:
        headers = llm_headers(provider)
        response, elapsed = _timed_request(client, "GET", provider.models_url, headers)
        if response.status_code in (401, 403):
            # Retrying a rejected key only adds noise to the provider's abuse detection.
            raise CheckFailed(f"key rejected ({response.status_code})", final=True)
        if response.status_code != 200:
            raise CheckFailed(f"expected 200, got {response.status_code}")
        try:
            models = response.json().get("data")
        except (ValueError, AttributeError):
            raise CheckFailed("answer is not a JSON model list") from None
        if not isinstance(models, list) or not models:
            raise CheckFailed("answer lists no models")
        return f"200 in {_ms(elapsed)}, {len(models)} models"

    return run


def _database(env: Environment, timeout_s: float) -> Callable[[], str]:
    db = env.database

    def run() -> str:
        start = time.perf_counter()
        info = db.conninfo(statement_timeout_s=timeout_s, lock_timeout_s=timeout_s)
        # libpq only takes whole seconds and treats anything below 2 as 2.
        info["connect_timeout"] = max(2, math.ceil(timeout_s))
        with psycopg.connect(**info, autocommit=True) as conn:
            for query in db.probe_queries:
                cur = conn.execute(query)
                if cur.description is not None:
                    cur.fetchall()
        elapsed = time.perf_counter() - start
        if elapsed * 1000 > db.latency_budget_ms:
            raise CheckFailed(f"latency {_ms(elapsed)} over budget {db.latency_budget_ms:.0f} ms")
        n = len(db.probe_queries)
        return f"connect and {n} quer{'y' if n == 1 else 'ies'} in {_ms(elapsed)}"

    return run


def _redis(env: Environment, timeout_s: float) -> Callable[[], str]:
    settings = env.redis
    assert settings is not None

    def run() -> str:
        password = settings.password()
        if settings.password_source() and not password:
            raise CheckFailed(f"{settings.password_source()} is not set", final=True)
        start = time.perf_counter()
        # redis-py retries on its own by default; ours are the only retries, so attempts stay countable.
        client = redis.Redis.from_url(
            settings.url,
            username=settings.username,
            password=password,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        )
        try:
            try:
                pong = client.ping()
            except redis.AuthenticationError:
                raise CheckFailed("authentication failed", final=True) from None
        finally:
            client.close()
        elapsed = time.perf_counter() - start
        if pong is not True:
            raise CheckFailed(f"PING answered {pong!r}")
        return f"PONG in {_ms(elapsed)}"

    return run


def checks_for(env: Environment, client: httpx.Client) -> list[Check]:
    """Every check configured for `env`, in report order; HTTP checks share `client`."""
    v = env.verify
    checks = [Check(f"health {url}", "health", _health(client, url)) for url in v.health_urls]
    checks.append(Check("database", "database", _database(env, v.timeout_s)))
    if env.redis is not None:
        checks.append(Check("redis", "redis", _redis(env, v.timeout_s)))
    checks += [Check(f"llm {p.name}", "llm", _llm(client, p)) for p in env.llm_providers]
    checks += [Check(f"endpoint {ep.name}", "endpoint", _endpoint(client, ep)) for ep in v.endpoints]
    return checks
