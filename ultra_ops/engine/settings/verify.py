"""Verification: `[environments.X.verify]`, the automated checks, performance verification and the
verification window (smoke tests are in `smoke`).

    [environments.production.verify]
    timeout_s = 5
    retries = 2
    health_urls = ["http://127.0.0.1:8002/health"]
    endpoints = [{ name = "version", url = "http://127.0.0.1:8002/api/v1/version", latency_budget_ms = 500 }]

    [environments.production.verify.window]
    samples = 5               # verifications over the window, the first right after the deploy
    interval_s = 30           # between samples: 5 samples span 2 minutes
    failure_limit = 1         # failed samples tolerated: more fail the window, fewer but some are inconclusive
    on_inconclusive = "wait"  # wait for a person (approve or roll back); "fail" or "pass" decide alone
    decision_wait_s = 3600    # then roll back

    [environments.production.verify.performance]
    requests = 50
    concurrency = 5
    endpoints = [{ name = "prompts", url = "http://127.0.0.1:8002/api/v1/prompts", p95_ms = 300 }]
"""

from __future__ import annotations

from dataclasses import dataclass

from ultra_ops.engine.settings.smoke import HTTP_METHODS, SmokeSequence, read_smoke
from ultra_ops.engine.settings.table import TableReader, show_number

ON_INCONCLUSIVE = ("wait", "fail", "pass")


@dataclass(frozen=True)
class EndpointCheck:
    """An HTTP endpoint that verification calls, with what it must answer and how fast."""

    name: str
    url: str
    method: str = "GET"
    expect_status: int = 200
    latency_budget_ms: float | None = None


@dataclass(frozen=True)
class LatencyTarget:
    """A critical endpoint: its latency percentiles over `requests` calls against budgets."""

    name: str
    url: str
    method: str = "GET"
    requests: int | None = None  # None: the performance table's
    p50_ms: float | None = None
    p95_ms: float | None = None
    max_ms: float | None = None


@dataclass(frozen=True)
class PerformanceSettings:
    requests: int = 50
    concurrency: int = 5
    endpoints: tuple[LatencyTarget, ...] = ()
    cpu_percent: float | None = None  # per service process, over the verification
    memory_mb: float | None = None
    open_files: int | None = None
    disk_free_mb: float | None = None  # None: the environment's min_free_disk_mb
    disk_free_percent: float = 5.0
    slow_statement_ms: float = 500.0  # mean time of a statement since the deploy (a warning)
    connection_headroom: float = 0.2  # free share of max_connections at least
    llm_completion: bool = False  # spend one small completion per provider that names a completion_url
    max_rate_per_s: float | None = None  # start at most this many requests a second (under the API's rate limit)


@dataclass(frozen=True)
class WindowSettings:
    samples: int = 1
    interval_s: float = 0.0
    failure_limit: int = 0
    on_inconclusive: str = "wait"
    decision_wait_s: float = 3600.0


@dataclass(frozen=True)
class VerifySettings:
    timeout_s: float = 5.0
    retries: int = 2
    backoff_s: float = 0.5
    health_urls: tuple[str, ...] = ()
    endpoints: tuple[EndpointCheck, ...] = ()
    smoke: tuple[SmokeSequence, ...] = ()
    performance: PerformanceSettings | None = None
    window: WindowSettings = WindowSettings()


def read_verify(r: TableReader | None) -> VerifySettings:
    if r is None:
        return VerifySettings()
    endpoints = []
    for e in r.tables("endpoints"):
        status = e.get("expect_status", int, 200)
        if not 100 <= status <= 599:
            raise e.fail("expect_status", f"{status} is not an HTTP status: expected 100 to 599")
        budget = e.budget("latency_budget_ms", at_most=600_000, unit=" ms")
        endpoints.append(
            EndpointCheck(
                name=e.get("name", str, required=True),
                url=e.url("url"),
                method=e.get("method", str, "GET").upper(),
                expect_status=status,
                latency_budget_ms=float(budget) if budget is not None else None,
            )
        )
        e.finish()
    health = r.string_list("health_urls")
    for i, url in enumerate(health):
        if not url.startswith(("http://", "https://")):
            raise r.fail(f"health_urls[{i}]", f"expected an http:// or https:// URL, got {url!r}")
    timeout_s = r.above_zero("timeout_s", 5.0, at_most=600, unit=" seconds")
    settings = VerifySettings(
        timeout_s=timeout_s,
        retries=r.positive("retries", 2, integer=True, at_most=20),
        backoff_s=float(r.positive("backoff_s", 0.5, at_most=600, unit=" seconds")),
        health_urls=health,
        endpoints=tuple(endpoints),
        smoke=read_smoke(r.sub("smoke")),
        performance=read_performance(r.sub("performance")),
        window=read_window(r.sub("window")),
    )
    r.finish()
    return settings


def read_performance(r: TableReader | None) -> PerformanceSettings | None:
    if r is None:
        return None
    requests = r.get("requests", int, 50)
    concurrency = r.get("concurrency", int, 5)
    if not 1 <= requests <= 100_000:
        raise r.fail("requests", f"expected 1 to 100000, got {requests}")
    if not 1 <= concurrency <= 256:
        raise r.fail("concurrency", f"expected 1 to 256, got {concurrency}")
    targets = []
    for e in r.tables("endpoints"):
        n = e.get("requests", int, None)
        if n is not None and not 1 <= n <= 100_000:
            raise e.fail("requests", f"expected 1 to 100000, got {n}")
        method = e.get("method", str, "GET").upper()
        if method not in HTTP_METHODS:
            raise e.fail("method", f"expected one of {', '.join(HTTP_METHODS)}, got {method!r}")
        targets.append(
            LatencyTarget(
                e.get("name", str, required=True),
                e.url("url"),
                method,
                n,
                e.budget("p50_ms", at_most=600_000, unit=" ms"),
                e.budget("p95_ms", at_most=600_000, unit=" ms"),
                e.budget("max_ms", at_most=600_000, unit=" ms"),
            )
        )
        e.finish()
    headroom = float(r.positive("connection_headroom", 0.2))
    if headroom >= 1:
        raise r.fail("connection_headroom", f"expected 0 to less than 1 (a share, e.g. 0.2), got {headroom:g}")
    free_pct = float(r.positive("disk_free_percent", 5.0))
    if free_pct >= 100:
        raise r.fail("disk_free_percent", f"expected 0 to less than 100 (a percentage), got {free_pct:g}")
    open_files = r.get("open_files", int, None)
    if open_files is not None and open_files > 10_000_000:
        raise r.fail("open_files", f"expected at most 10000000 (0 or less: not checked), got {show_number(open_files)}")
    settings = PerformanceSettings(
        requests=requests,
        concurrency=concurrency,
        endpoints=tuple(targets),
        cpu_percent=r.budget("cpu_percent", at_most=100_000, unit="%"),
        memory_mb=r.budget("memory_mb", at_most=100_000_000, unit=" MB"),
        open_files=open_files if open_files is None or open_files > 0 else None,
        disk_free_mb=r.budget("disk_free_mb", at_most=1_000_000_000, unit=" MB"),
        disk_free_percent=free_pct,
        slow_statement_ms=float(r.positive("slow_statement_ms", 500.0, at_most=3_600_000, unit=" ms")),
        connection_headroom=headroom,
        llm_completion=r.get("llm_completion", bool, False),
        max_rate_per_s=r.budget("max_rate_per_s", at_most=1_000_000, unit=" requests a second"),
    )
    r.finish()
    return settings


def read_window(r: TableReader | None) -> WindowSettings:
    if r is None:
        return WindowSettings()
    samples = r.get("samples", int, 1)
    if not 1 <= samples <= 1000:
        raise r.fail("samples", f"expected 1 to 1000, got {samples}")
    interval = float(r.positive("interval_s", 0.0, at_most=3600, unit=" seconds"))
    limit = r.positive("failure_limit", 0, integer=True, at_most=999)
    if limit >= samples and samples > 1:
        raise r.fail("failure_limit", f"{limit} failed samples of {samples} could never fail the window")
    on = r.get("on_inconclusive", str, "wait")
    if on not in ON_INCONCLUSIVE:
        raise r.fail("on_inconclusive", f"expected one of {', '.join(ON_INCONCLUSIVE)}, got {on!r}")
    wait = r.above_zero("decision_wait_s", 3600.0, at_most=7 * 86400, unit=" seconds (a week)")
    r.finish()
    return WindowSettings(samples, interval, limit, on, wait)
