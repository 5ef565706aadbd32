"""Smoke tests: `[environments.X.verify.smoke.<name>]`, a base URL and HTTP steps run in order,
each saying what its answer must be.

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

Secrets are read only from the environment: `{env:NAME}` in a step, where NAME becomes one of the
environment's secret variables (masked everywhere, passed to its services). `{name}` is a value an
earlier step captured.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ultra_ops.engine.settings.table import ENV_VAR_NAME, TableReader

# {token} is a value captured by an earlier step; {env:NAME} an environment variable (a secret).
PLACEHOLDER = re.compile(r"\{(env:)?([A-Za-z_][A-Za-z0-9_]*)\}")
FIELD_TYPES = ("string", "number", "integer", "boolean", "object", "array", "any")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")


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


def _dotted_table(r: TableReader, name: str, *, values: tuple[str, ...] | None = None) -> dict[str, Any]:
    table = r.get(name, dict, {})
    for key, value in table.items():
        if values is not None and value not in values:
            raise r.fail(f"{name}.{key}", f"expected one of {', '.join(values)}, got {value!r}")
    return dict(table)


def _names(r: TableReader, name: str) -> dict[str, str]:
    table = r.get(name, dict, {})
    for key, value in table.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise r.fail(f"{name}.{key}", "is not a name (letters, digits and '_')")
        if not isinstance(value, str) or not value:
            raise r.fail(f"{name}.{key}", "expected a non-empty string")
    return dict(table)


def _step(r: TableReader, captured: set[str]) -> SmokeStep:
    method = r.get("method", str, "GET").upper()
    if method not in HTTP_METHODS:
        raise r.fail("method", f"expected one of {', '.join(HTTP_METHODS)}, got {method!r}")
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
        raise r.fail("expect_status", f"{status} is not an HTTP status: expected 100 to 599")
    latency = r.budget("max_latency_ms", at_most=600_000, unit=" ms")
    only_if = r.get("only_if_env", str, None)
    if only_if is not None and not ENV_VAR_NAME.fullmatch(only_if):
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
        max_latency_ms=latency,
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


def read_smoke(r: TableReader | None) -> tuple[SmokeSequence, ...]:
    """`[...verify.smoke.<name>]` tables, each a base_url and its steps in order."""
    if r is None:
        return ()
    sequences = []
    for name in list(r.table):
        s = r.sub(name)
        assert s is not None
        base = s.url("base_url").rstrip("/")
        timeout = s.budget("timeout_s", at_most=3600, unit=" seconds")
        captured: set[str] = set()
        steps = []
        items = s.get("steps", list, required=True)
        if not items:
            raise s.fail("steps", "names no step")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise s.fail(f"steps[{i}]", "expected a table")
            step = _step(TableReader(s.path, item, s.key(f"steps[{i}]")), captured)
            captured |= set(step.capture) | set(step.capture_metrics)
            steps.append(step)
        s.finish()
        sequences.append(SmokeSequence(name, base, tuple(steps), timeout))
    return tuple(sequences)
