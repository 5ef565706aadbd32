"""What `[environments.X.verify]` says beyond the automated checks: smoke tests, performance
verification and the verification window.

    [environments.production.verify.window]
    samples = 5               # verifications over the window, the first right after the deploy
    interval_s = 30           # between samples: 5 samples span 2 minutes
    failure_limit = 1         # failed samples tolerated: more fail the window, fewer but some are inconclusive
    on_inconclusive = "wait"  # wait for a person (approve or roll back); "fail" or "pass" decide alone
    decision_wait_s = 3600    # then roll back

    [environments.production.verify.smoke.release]
    base_url = "http://127.0.0.1:8002"
    [[environments.production.verify.smoke.release.steps]]
    name = "log in"
    method = "POST"
    path = "/api/v1/auth/login"
    json = { username = "admin", password = "{env:ULTRA_PROD_AUTH_PASSWORD}" }
    only_if_env = "ULTRA_PROD_AUTH_PASSWORD"   # authentication is off where the variable is unset
    expect_status = 200
    expect_fields = { token = "string" }
    capture = { token = "token" }              # later steps say {token}

    [environments.production.verify.performance]
    requests = 50
    concurrency = 5
    endpoints = [{ name = "prompts", url = "http://127.0.0.1:8002/api/v1/prompts", p95_ms = 300 }]

Secrets are read only from the environment: `{env:NAME}` in a step, where NAME becomes one of the
environment's secret variables (masked everywhere, passed to its services). `{name}` is a value an
earlier step captured.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ultra_ops.engine.settings.reader import _Reader

# {token} is a value captured by an earlier step; {env:NAME} an environment variable (a secret).
PLACEHOLDER = re.compile(r"\{(env:)?([A-Za-z_][A-Za-z0-9_]*)\}")
FIELD_TYPES = ("string", "number", "integer", "boolean", "object", "array", "any")
ON_INCONCLUSIVE = ("wait", "fail", "pass")
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")


@dataclass(frozen=True)
class SmokeStep:
    """One HTTP request of a smoke sequence and what its answer must be."""

    name: str
    method: str = "GET"
    path: str = "/"  # appended to the sequence's base_url
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None  # a JSON body; strings may hold placeholders
    body: str | None = None  # a raw body (an upload)
    expect_status: int = 200
    expect_json: dict[str, Any] = field(default_factory=dict)  # dotted path -> exact value
    expect_fields: dict[str, str] = field(default_factory=dict)  # dotted path -> type (the answer's shape)
    capture: dict[str, str] = field(default_factory=dict)  # name -> dotted path of the answer
    capture_metrics: dict[str, str] = field(default_factory=dict)  # name -> Prometheus metric (summed)
    expect_metric_increase: dict[str, str] = field(default_factory=dict)  # metric -> captured name
    max_latency_ms: float | None = None
    only_if_env: str | None = None  # skipped (and its captures absent) unless this variable is set

    def env_names(self) -> set[str]:
        """The environment variables the step reads: its secrets."""
        names = {m.group(2) for text in _strings(self) for m in PLACEHOLDER.finditer(text) if m.group(1)}
        return names | ({self.only_if_env} if self.only_if_env else set())

    def captured_names(self) -> set[str]:
        """The values of earlier steps the step uses."""
        return {m.group(2) for text in _strings(self) for m in PLACEHOLDER.finditer(text) if not m.group(1)}


def _strings(step: SmokeStep) -> list[str]:
    out = [step.path, *step.headers.values(), *([step.body] if step.body is not None else [])]

    def walk(value: Any) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(step.json)
    return out


@dataclass(frozen=True)
class SmokeSequence:
    name: str
    base_url: str
    steps: tuple[SmokeStep, ...]
    timeout_s: float | None = None  # per request; None: the verify timeout


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

    @property
    def single_pass(self) -> bool:
        return self.samples <= 1


def _dotted_table(r: _Reader, name: str, *, values: tuple[str, ...] | None = None) -> dict[str, Any]:
    table = r.get(name, dict, {})
    for key, value in table.items():
        if values is not None and value not in values:
            raise r.fail(f"{name}.{key}", f"expected one of {', '.join(values)}, got {value!r}")
    return dict(table)


def _names(r: _Reader, name: str) -> dict[str, str]:
    table = r.get(name, dict, {})
    for key, value in table.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise r.fail(f"{name}.{key}", "is not a name (letters, digits and '_')")
        if not isinstance(value, str) or not value:
            raise r.fail(f"{name}.{key}", "expected a non-empty string")
    return dict(table)


def _step(r: _Reader, captured: set[str]) -> SmokeStep:
    method = r.get("method", str, "GET").upper()
    if method not in _METHODS:
        raise r.fail("method", f"expected one of {', '.join(_METHODS)}, got {method!r}")
    path = r.get("path", str, "/")
    if not path.startswith("/"):
        raise r.fail("path", f"must start with '/', got {path!r}")
    headers = r.get("headers", dict, {})
    for key, value in headers.items():
        if not isinstance(value, str):
            raise r.fail(f"headers.{key}", "expected a string")
    if "json" in r.table and "body" in r.table:
        raise r.fail("body", "give json or body, not both")
    status = r.get("expect_status", int, 200)
    if not 100 <= status <= 599:
        raise r.fail("expect_status", f"{status} is not an HTTP status")
    latency = r.get("max_latency_ms", (int, float), None)
    if latency is not None and latency <= 0:
        raise r.fail("max_latency_ms", "must be greater than 0")
    only_if = r.get("only_if_env", str, None)
    if only_if is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", only_if):
        raise r.fail("only_if_env", "must name an environment variable")
    step = SmokeStep(
        name=r.get("name", str, required=True),
        method=method,
        path=path,
        headers=dict(headers),
        json=r.get("json", (dict, list, str, int, float, bool), None),
        body=r.get("body", str, None),
        expect_status=status,
        expect_json=_dotted_table(r, "expect_json"),
        expect_fields=_dotted_table(r, "expect_fields", values=FIELD_TYPES),
        capture=_names(r, "capture"),
        capture_metrics=_names(r, "capture_metrics"),
        expect_metric_increase=_names(r, "expect_metric_increase"),
        max_latency_ms=float(latency) if latency is not None else None,
        only_if_env=only_if,
    )
    unknown = step.captured_names() - captured
    if unknown:
        raise r.fail("name", f"uses {{{sorted(unknown)[0]}}}, which no earlier step captures")
    for metric, name in step.expect_metric_increase.items():
        if name not in captured:
            raise r.fail(f"expect_metric_increase.{metric}", f"{name!r} is not captured by an earlier step")
    r.finish()
    return step


def read_smoke(r: _Reader | None, url_check: Any) -> tuple[SmokeSequence, ...]:
    """`[...verify.smoke.<name>]` tables, each a base_url and its steps in order."""
    if r is None:
        return ()
    sequences = []
    for name in list(r.table):
        s = r.sub(name)
        assert s is not None
        base = url_check(s, "base_url").rstrip("/")
        timeout = s.get("timeout_s", (int, float), None)
        if timeout is not None and timeout <= 0:
            raise s.fail("timeout_s", "must be greater than 0")
        captured: set[str] = set()
        steps = []
        items = s.get("steps", list, required=True)
        if not items:
            raise s.fail("steps", "names no step")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise s.fail(f"steps[{i}]", "expected a table")
            step = _step(type(s)(s.path, item, s.key(f"steps[{i}]")), captured)
            captured |= set(step.capture) | set(step.capture_metrics)
            steps.append(step)
        s.finish()
        sequences.append(SmokeSequence(name, base, tuple(steps), float(timeout) if timeout is not None else None))
    return tuple(sequences)


def _budget(r: _Reader, name: str) -> float | None:
    value = r.get(name, (int, float), None)
    if value is not None and value <= 0:
        raise r.fail(name, "must be greater than 0")
    return float(value) if value is not None else None


def read_performance(r: _Reader | None, url_check: Any) -> PerformanceSettings | None:
    if r is None:
        return None
    requests = r.get("requests", int, 50)
    concurrency = r.get("concurrency", int, 5)
    if not 1 <= requests <= 100_000:
        raise r.fail("requests", f"expected 1 to 100000, got {requests}")
    if not 1 <= concurrency <= 256:
        raise r.fail("concurrency", f"expected 1 to 256, got {concurrency}")
    targets = []
    for i, item in enumerate(r.get("endpoints", list, [])):
        if not isinstance(item, dict):
            raise r.fail(f"endpoints[{i}]", "expected a table")
        e = type(r)(r.path, item, r.key(f"endpoints[{i}]"))
        n = e.get("requests", int, None)
        if n is not None and not 1 <= n <= 100_000:
            raise e.fail("requests", f"expected 1 to 100000, got {n}")
        method = e.get("method", str, "GET").upper()
        if method not in _METHODS:
            raise e.fail("method", f"expected one of {', '.join(_METHODS)}, got {method!r}")
        targets.append(
            LatencyTarget(
                e.get("name", str, required=True),
                url_check(e, "url"),
                method,
                n,
                _budget(e, "p50_ms"),
                _budget(e, "p95_ms"),
                _budget(e, "max_ms"),
            )
        )
        e.finish()
    headroom = float(r.positive("connection_headroom", 0.2))
    if headroom >= 1:
        raise r.fail("connection_headroom", "expected a share below 1, e.g. 0.2")
    free_pct = float(r.positive("disk_free_percent", 5.0))
    if free_pct >= 100:
        raise r.fail("disk_free_percent", "expected a percentage below 100")
    open_files = r.get("open_files", int, None)
    settings = PerformanceSettings(
        requests=requests,
        concurrency=concurrency,
        endpoints=tuple(targets),
        cpu_percent=_budget(r, "cpu_percent"),
        memory_mb=_budget(r, "memory_mb"),
        open_files=open_files if open_files is None or open_files > 0 else None,
        disk_free_mb=_budget(r, "disk_free_mb"),
        disk_free_percent=free_pct,
        slow_statement_ms=float(r.positive("slow_statement_ms", 500.0)),
        connection_headroom=headroom,
        llm_completion=r.get("llm_completion", bool, False),
        max_rate_per_s=_budget(r, "max_rate_per_s"),
    )
    r.finish()
    return settings


def read_window(r: _Reader | None) -> WindowSettings:
    if r is None:
        return WindowSettings()
    samples = r.get("samples", int, 1)
    if not 1 <= samples <= 1000:
        raise r.fail("samples", f"expected 1 to 1000, got {samples}")
    interval = float(r.positive("interval_s", 0.0))
    if interval > 3600:
        raise r.fail("interval_s", f"expected at most 3600 seconds, got {interval:g}")
    limit = r.positive("failure_limit", 0, integer=True)
    if limit >= samples and samples > 1:
        raise r.fail("failure_limit", f"{limit} failed samples of {samples} could never fail the window")
    on = r.get("on_inconclusive", str, "wait")
    if on not in ON_INCONCLUSIVE:
        raise r.fail("on_inconclusive", f"expected one of {', '.join(ON_INCONCLUSIVE)}, got {on!r}")
    wait = float(r.positive("decision_wait_s", 3600.0))
    if not 0 < wait <= 7 * 86400:
        raise r.fail("decision_wait_s", f"expected more than 0 and at most a week, got {wait:g}")
    r.finish()
    return WindowSettings(samples, interval, limit, on, wait)
