"""Performance verification, the release document's four points in order: response times of the
critical endpoints, server resources (CPU, memory, open files, disk), database query performance,
and LLM request latency (one small completion per provider, only where the config allows it).

The services' CPU share is measured over the latency load, when they are working.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ultra_ops.engine.hosts.names import as_configured
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Environment, LlmProvider
from ultra_ops.engine.verify.checks import CheckFailed, describe_error, expected_errors, llm_headers
from ultra_ops.engine.verify.latency import latency_results
from ultra_ops.engine.verify.report import CheckResult
from ultra_ops.engine.verify.statements import database_results
from ultra_ops.engine.verify.usage import CpuWindow, compose_results, disk_results, host_disk_results

httpx = lazy_module("httpx")


def _completion(client: httpx.Client, provider: LlmProvider, timeout_s: float) -> CheckResult:
    name = f"llm completion {provider.name}"
    start = time.perf_counter()
    try:
        headers = llm_headers(provider)
        body = {
            "model": provider.model or "default",
            "max_tokens": 1,
            "messages": [{"role": "user", "content": "ping"}],
        }
        response = client.post(provider.completion_url or "", json=body, headers=headers, timeout=timeout_s)
        elapsed = (time.perf_counter() - start) * 1000
        if response.status_code != 200:
            raise CheckFailed(f"expected 200, got {response.status_code}")
    except CheckFailed as exc:
        return CheckResult(name, "llm_latency", False, (time.perf_counter() - start) * 1000, 1, exc.detail)
    except expected_errors() as exc:
        return CheckResult(
            name, "llm_latency", False, (time.perf_counter() - start) * 1000, 1, describe_error(exc, timeout_s)
        )
    budget = provider.completion_budget_ms
    over = budget is not None and elapsed > budget
    detail = f"one completion in {elapsed:.0f} ms" + (f", over budget {budget:.0f} ms" if over else "")
    return CheckResult(name, "llm_latency", not over, elapsed, 1, detail, metrics={"latency_ms": elapsed})


def performance_results(
    env: Environment, verify_tls: object, redact: Redactor, clean: Callable[[str], str]
) -> list[CheckResult]:
    perf = env.verify.performance
    if perf is None:
        return []
    timeout_s = env.verify.timeout_s
    cpu = None
    if env.runtime == "process":
        from ultra_ops.engine.runtimes.process import ProcessRuntime

        cpu = CpuWindow(ProcessRuntime(env, redact=redact).service_pids())
    results = latency_results(perf, timeout_s, verify_tls, event_hooks=as_configured(env))
    if cpu is not None:
        results += cpu.results(perf)
    else:
        results += compose_results(env, perf, redact)
    results += disk_results(env, perf)
    results += host_disk_results(env, perf, redact)
    results += database_results(env, perf, timeout_s)
    if perf.llm_completion:
        with httpx.Client(follow_redirects=False, verify=verify_tls, event_hooks=as_configured(env)) as client:
            results += [_completion(client, p, timeout_s) for p in env.llm_providers if p.completion_url]
    return [
        CheckResult(r.name, r.kind, r.ok, r.latency_ms, r.attempts, clean(r.detail), r.blocking, r.skipped, r.metrics)
        for r in results
    ]
