"""Post-deploy verification: every check of an environment at once, each with a timeout and retries.

A failed check is a result, never an exception, so one report always says everything that is wrong.
Checks run in threads: psycopg and redis-py are blocking clients, and a thread per check keeps each
check's retry loop plain sequential code (bench/verify_bench.py measures what that costs).
"""

from __future__ import annotations

import functools
import os
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime

from ultra_ops.engine.envfile import read_env_file
from ultra_ops.engine.errors import VerificationFailed
from ultra_ops.engine.hosts.names import as_configured
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment
from ultra_ops.engine.verify.checks import Check, CheckFailed, checks_for, describe_error, expected_errors
from ultra_ops.engine.verify.performance import performance_results
from ultra_ops.engine.verify.report import CheckResult, VerifyReport
from ultra_ops.engine.verify.smoke import run_sequence

httpx = lazy_module("httpx")

# More threads than this buys nothing on one host and only delays the first results.
MAX_WORKERS = 64
MAX_DETAIL = 200  # a detail is a reason for a table cell, not a log dump


def _run_with_retries(
    check: Check, retries: int, backoff_s: float, timeout_s: float, redact: Callable[[str], str]
) -> CheckResult:
    attempts, latency, ok, detail = 0, 0.0, False, ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        attempts += 1
        start = time.perf_counter()
        final = False
        try:
            detail, ok = check.run(), True
        except CheckFailed as exc:
            detail, final = exc.detail, exc.final
        except expected_errors() as exc:
            detail = describe_error(exc, timeout_s)
        latency = (time.perf_counter() - start) * 1000
        if ok or final:
            break
    # Redact before shortening: a secret cut in half would no longer match the redactor.
    detail = redact(detail)
    if len(detail) > MAX_DETAIL:
        detail = detail[: MAX_DETAIL - 3] + "..."
    return CheckResult(
        name=redact(check.name), kind=check.kind, ok=ok, latency_ms=latency, attempts=attempts, detail=detail
    )


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


def verify_environment(
    env: Environment, *, redact: Redactor | None = None, log: Log | None = None, performance: bool = True
) -> VerifyReport:
    """Run every configured check of `env` and return the report; never raises for a failure.

    The automated checks and the smoke sequences run at once; performance verification (unless
    `performance` is False) after them, so its load never slows the checks' latency budgets."""
    log = log or NullLog()
    clean = _redactor(env, redact if redact is not None else Redactor.for_environment(env))
    v = env.verify
    started_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    start = time.perf_counter()
    timeout = httpx.Timeout(v.timeout_s)
    urls = [
        *v.health_urls,
        *(ep.url for ep in v.endpoints),
        *(p.models_url for p in env.llm_providers),
        *(seq.base_url for seq in v.smoke),
    ]
    if v.performance is not None:
        urls += [t.url for t in v.performance.endpoints]
    tls = _tls_for(urls)
    # One connection per concurrent check, so no check waits for another's connection.
    n = max(len(urls), 1)
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    results: dict[int, list[CheckResult]] = {}
    with httpx.Client(
        timeout=timeout, limits=limits, follow_redirects=False, verify=tls, event_hooks=as_configured(env)
    ) as client:
        tasks: list[Callable[[], list[CheckResult]]] = [
            functools.partial(lambda c: [_run_with_retries(c, v.retries, v.backoff_s, v.timeout_s, clean)], check)
            for check in checks_for(env, client)
        ]
        # {env:NAME} in a smoke step: ours first, then the env file (what the services get).
        variables = {**read_env_file(env.env_file), **os.environ} if v.smoke else {}
        tasks += [functools.partial(run_sequence, seq, client, v.timeout_s, clean, variables) for seq in v.smoke]
        with ThreadPoolExecutor(max_workers=min(len(tasks), MAX_WORKERS), thread_name_prefix="verify") as pool:
            # Checks start only once all are submitted: otherwise the first checks' CPU work holds
            # the GIL while the pool is still starting threads for the rest (bench/verify_bench.py).
            go = threading.Event()

            def gated(task: Callable[[], list[CheckResult]]) -> list[CheckResult]:
                go.wait()
                return task()

            try:
                futures = {pool.submit(gated, t): i for i, t in enumerate(tasks)}
            finally:
                go.set()
            # Logging happens here, in the caller's thread: Dagster's context.log is not meant for
            # worker threads, and lines still appear as soon as each check finishes.
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                for result in results[futures[future]]:
                    _log_result(env, result, log, clean)
    ordered = [r for i in range(len(results)) for r in results[i]]
    if performance and v.performance is not None:
        for result in performance_results(env, tls, Redactor.for_environment(env), clean):
            _log_result(env, result, log, clean)
            ordered.append(result)
    duration = (time.perf_counter() - start) * 1000
    return VerifyReport(environment=env.name, results=tuple(ordered), started_at=started_at, duration_ms=duration)


def _log_result(env: Environment, result: CheckResult, log: Log, clean: Callable[[str], str]) -> None:
    attempts = f"; {result.attempts} attempt{'s' if result.attempts != 1 else ''}" if result.attempts else ""
    line = f"verify {env.name}: {result.name}: {result.status} ({result.detail}{attempts})"
    (log.info if result.ok else log.warning)(clean(line))


def verify_or_fail(
    env: Environment,
    failure: str,
    *,
    log: Log,
    redact: Redactor,
    on_report: Callable[[VerifyReport], None] | None = None,
) -> VerifyReport:
    """verify_environment, the report handed to `on_report` first (recorded whatever the outcome),
    then VerificationFailed("<failure>: <summary>") when a check failed."""
    report = verify_environment(env, redact=redact, log=log)
    if on_report is not None:
        on_report(report)
    if not report.ok:
        raise VerificationFailed(f"{failure}: {report.summary()}")
    return report
