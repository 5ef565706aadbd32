"""Smoke tests: the release document's manual verification as named sequences of HTTP steps.

A step sends one request (placeholders filled from the environment and from earlier answers),
then checks its status, latency, JSON fields and Prometheus counters. The first failing step ends
its sequence: the steps after it depend on what it should have done, and are reported as not run.
Captured values (a login token) are masked in every detail like the environment's secrets.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings.smoke import PLACEHOLDER, SmokeSequence, SmokeStep
from ultra_ops.engine.verify.checks import describe_error, expected_errors
from ultra_ops.engine.verify.report import CheckResult

httpx = lazy_module("httpx")

_MISSING = object()
_VARIABLES = "env:"  # where run_sequence keeps the variables {env:NAME} reads
_EXCERPT = 80
# name{label="value",...} value [timestamp]
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


class StepFailed(Exception):
    pass


class _Skip(Exception):
    pass


def field_at(data: Any, path: str) -> Any:
    """The value at a dotted path (`usage.total_tokens`, `items.0.id`), or _MISSING."""
    value = data
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "any":
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    return isinstance(value, list)  # array


def metric_value(text: str, selector: str) -> float | None:
    """The sum of the samples of a Prometheus text exposition that match `selector`: a metric name,
    optionally with labels (`ultra_http_requests_total{path="/api/v1/prompt"}`); None if none match."""
    m = re.fullmatch(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{.*\})?", selector.strip())
    if not m:
        return None
    name, wanted = m.group(1), dict(_LABEL.findall(m.group(2) or ""))
    total, found = 0.0, False
    for line in text.splitlines():
        sample = _SAMPLE.match(line)
        if not sample or sample.group(1) != name:
            continue
        labels = dict(_LABEL.findall(sample.group(2) or ""))
        if any(labels.get(k) != v for k, v in wanted.items()):
            continue
        try:
            total += float(sample.group(3))
        except ValueError:
            continue
        found = True
    return total if found else None


def _fill(text: str, captured: dict[str, Any]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(1):
            value = captured.get(_VARIABLES, {}).get(m.group(2))
            if value is None:
                raise _Skip(f"{m.group(2)} is not set")
            return value
        if m.group(2) not in captured:
            raise _Skip(f"needs {{{m.group(2)}}}, which a skipped step did not capture")
        return str(captured[m.group(2)])

    return PLACEHOLDER.sub(sub, text)


def _fill_json(value: Any, captured: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return _fill(value, captured)
    if isinstance(value, dict):
        return {k: _fill_json(v, captured) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_json(v, captured) for v in value]
    return value


def _headers(step: SmokeStep, captured: dict[str, Any]) -> dict[str, str]:
    headers = {}
    for name, template in step.headers.items():
        try:
            headers[name] = _fill(template, captured)
        except _Skip:
            # A bearer header whose login was skipped (authentication off): the request goes without it.
            continue
    return headers


def _excerpt(response: httpx.Response, clean: Callable[[str], str]) -> str:
    # Masked before it is cut: half a secret would no longer be recognised.
    text = clean(" ".join(response.text.split()))
    return text[:_EXCERPT] + ("..." if len(text) > _EXCERPT else "")


def _check(
    step: SmokeStep, response: httpx.Response, elapsed_ms: float, captured: dict[str, Any], clean: Callable[[str], str]
) -> str:
    def _shown(value: Any) -> str:
        text = clean(repr(value))
        return text[:40] + "..." if len(text) > 40 else text

    if response.status_code != step.expect_status:
        got = f"{response.status_code}: {_excerpt(response, clean)}"
        raise StepFailed(f"expected status {step.expect_status}, got {got}")
    if step.max_latency_ms is not None and elapsed_ms > step.max_latency_ms:
        raise StepFailed(f"slow: {elapsed_ms:.0f} ms, over max_latency_ms {step.max_latency_ms:.0f}")
    data: Any = _MISSING
    if step.expect_json or step.expect_fields or step.capture:
        try:
            data = response.json()
        except ValueError:
            raise StepFailed(f"answer is not JSON: {_excerpt(response, clean)}") from None
    for path, kind in step.expect_fields.items():
        value = field_at(data, path)
        if value is _MISSING:
            raise StepFailed(f"field {path} missing")
        if not _type_ok(value, kind):
            raise StepFailed(f"field {path} is {type(value).__name__} {_shown(value)}, expected {kind}")
    for path, expected in step.expect_json.items():
        value = field_at(data, path)
        if value is _MISSING:
            raise StepFailed(f"field {path} missing")
        if value != expected:
            raise StepFailed(f"field {path} is {_shown(value)}, expected {_shown(expected)}")
    for metric, name in step.expect_metric_increase.items():
        now = metric_value(response.text, metric)
        if now is None:
            raise StepFailed(f"metric {metric} missing")
        if name not in captured:
            raise _Skip(f"needs {{{name}}}, which a skipped step did not capture")
        if not now > float(captured[name]):
            raise StepFailed(f"metric {metric} did not move: {now:g} (was {float(captured[name]):g})")
    for name, path in step.capture.items():
        value = field_at(data, path)
        if value is _MISSING:
            raise StepFailed(f"field {path} to capture as {{{name}}} missing")
        captured[name] = value
    for name, metric in step.capture_metrics.items():
        value = metric_value(response.text, metric)
        if value is None:
            raise StepFailed(f"metric {metric} missing")
        captured[name] = value
    return f"{response.status_code} in {elapsed_ms:.0f} ms"


def _to_capture(step: SmokeStep, response: httpx.Response) -> list[str]:
    """The strings the step captures from this answer, known before its checks may fail and quote it."""
    if not step.capture:
        return []
    try:
        data = response.json()
    except ValueError:
        return []
    values = [field_at(data, path) for path in step.capture.values()]
    return [v for v in values if isinstance(v, str)]


def run_sequence(
    seq: SmokeSequence,
    client: httpx.Client,
    timeout_s: float,
    redact: Callable[[str], str],
    variables: Mapping[str, str] | None = None,
) -> list[CheckResult]:
    """Every step of `seq` in order, one result each; never raises for a failure. `{env:NAME}` and
    `only_if_env` read `variables` (ultra_ops's environment, then the environment's env file: the
    variables its services get), os.environ without them."""
    # Held under a key no placeholder can name, beside the captured values.
    captured: dict[str, Any] = {_VARIABLES: dict(os.environ if variables is None else variables)}
    sensitive: list[str] = []  # captured strings (a token), also from an answer that failed its checks
    results: list[CheckResult] = []
    failed_at: str | None = None
    timeout = seq.timeout_s or timeout_s

    def clean(text: str) -> str:
        return Redactor(sensitive)(redact(text))

    for step in seq.steps:
        name = f"smoke {seq.name}: {step.name}"
        if failed_at is not None:
            results.append(CheckResult(name, "smoke", True, 0.0, 0, f"not run: {failed_at} failed", skipped=True))
            continue
        start = time.perf_counter()
        ok, skipped, detail, attempts = False, False, "", 1
        try:
            if step.only_if_env and not captured[_VARIABLES].get(step.only_if_env):
                raise _Skip(f"{step.only_if_env} is not set")
            url = seq.base_url + _fill(step.path, captured)
            kwargs: dict[str, Any] = {"headers": _headers(step, captured), "timeout": timeout}
            if step.json is not None:
                kwargs["json"] = _fill_json(step.json, captured)
            elif step.body is not None:
                kwargs["content"] = _fill(step.body, captured).encode()
            start = time.perf_counter()
            response = client.request(step.method, url, **kwargs)
            elapsed = (time.perf_counter() - start) * 1000
            sensitive.extend(_to_capture(step, response))
            detail, ok = _check(step, response, elapsed, captured, clean), True
        except _Skip as exc:
            ok, skipped, detail, attempts = True, True, f"skipped: {exc}", 0
        except StepFailed as exc:
            detail = str(exc)
        except expected_errors() as exc:
            detail = describe_error(exc, timeout)
        latency = (time.perf_counter() - start) * 1000 if attempts else 0.0
        if not ok:
            failed_at = step.name
        results.append(
            CheckResult(
                name,
                "smoke",
                ok,
                latency,
                attempts,
                clean(detail),
                skipped=skipped,
                metrics={} if skipped else {"latency_ms": latency},
            )
        )
    return results
