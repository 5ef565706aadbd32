"""Response times of the critical endpoints: p50, p95 and max over a configured number of requests
at a configured concurrency, against budgets (the release document's performance verification).

Percentiles are nearest-rank (the value below which q% of the requests fall, one of the measured
values), so a budget is compared with a latency a request really had.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from dataclasses import dataclass

from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.settings.verify import LatencyTarget, PerformanceSettings
from ultra_ops.engine.verify.checks import describe_error, expected_errors
from ultra_ops.engine.verify.report import CheckResult

httpx = lazy_module("httpx")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of `values` (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class LatencySample:
    latencies_ms: tuple[float, ...]  # of the requests that answered 2xx/3xx
    errors: dict[str, int]  # reason -> count, for the others

    @property
    def p50(self) -> float:
        return percentile(list(self.latencies_ms), 50)

    @property
    def p95(self) -> float:
        return percentile(list(self.latencies_ms), 95)

    @property
    def max(self) -> float:
        return max(self.latencies_ms, default=0.0)


def measure(
    client: httpx.Client,
    method: str,
    url: str,
    requests: int,
    concurrency: int,
    timeout_s: float,
    max_rate_per_s: float | None = None,
) -> LatencySample:
    """Send `requests` requests, at most `concurrency` at a time (and, with `max_rate_per_s`, the
    i-th not before i / rate seconds: a rate-limited API answers 429 to a faster burst), and time each."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    sent = [0]
    began = time.perf_counter()

    def worker() -> None:
        while True:
            with lock:
                if sent[0] >= requests:
                    return
                index = sent[0]
                sent[0] += 1
            if max_rate_per_s:
                time.sleep(max(0.0, began + index / max_rate_per_s - time.perf_counter()))
            start = time.perf_counter()
            try:
                response = client.request(method, url, timeout=timeout_s)
                response.read()
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    if response.status_code < 400:
                        latencies.append(elapsed)
                    else:
                        errors[f"status {response.status_code}"] += 1
            except expected_errors() as exc:
                with lock:
                    errors[describe_error(exc, timeout_s)] += 1

    threads = [
        threading.Thread(target=worker, name=f"latency-{i}", daemon=True) for i in range(min(concurrency, requests))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return LatencySample(tuple(latencies), dict(errors))


def judge(target: LatencyTarget, sample: LatencySample, requests: int) -> CheckResult:
    """The target's result: failed when a request failed or a percentile is over its budget."""
    metrics = {
        "p50_ms": sample.p50,
        "p95_ms": sample.p95,
        "max_ms": sample.max,
        "requests": float(requests),
        "errors": float(sum(sample.errors.values())),
    }
    figures = f"p50 {sample.p50:.0f} ms, p95 {sample.p95:.0f} ms, max {sample.max:.0f} ms over {requests}"
    problems = []
    if sample.errors:
        worst = max(sample.errors.items(), key=lambda kv: kv[1])
        problems.append(f"{sum(sample.errors.values())} of {requests} requests failed ({worst[0]})")
    for label, value, budget in (
        ("p50", sample.p50, target.p50_ms),
        ("p95", sample.p95, target.p95_ms),
        ("max", sample.max, target.max_ms),
    ):
        if budget is not None and sample.latencies_ms and value > budget:
            problems.append(f"{label} {value:.0f} ms over budget {budget:.0f} ms")
    detail = figures + ("; " + "; ".join(problems) if problems else "")
    return CheckResult(f"latency {target.name}", "latency", not problems, sample.p95, requests, detail, metrics=metrics)


def latency_results(
    perf: PerformanceSettings, timeout_s: float, verify_tls: object, *, event_hooks: dict | None = None
) -> list[CheckResult]:
    """Each critical endpoint in turn, so one endpoint's load never slows another's measurement.
    `event_hooks`: the client's (hosts/names.py: a tunnel's requests keep the configured name)."""
    results = []
    limits = httpx.Limits(max_connections=perf.concurrency, max_keepalive_connections=perf.concurrency)
    with httpx.Client(limits=limits, follow_redirects=False, verify=verify_tls, event_hooks=event_hooks) as client:
        for target in perf.endpoints:
            n = target.requests or perf.requests
            sample = measure(client, target.method, target.url, n, perf.concurrency, timeout_s, perf.max_rate_per_s)
            results.append(judge(target, sample, n))
    return results
