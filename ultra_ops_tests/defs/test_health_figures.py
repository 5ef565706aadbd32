"""health_state's plotted figures: the same keys in every environment and release (never a URL or
a provider's name), one line per environment on its own asset, no figure that can only be 0."""

from __future__ import annotations

import pytest

from ultra_ops.defs.release.health_figures import ENVIRONMENT_HEALTH, environment_observation, health_figures
from ultra_ops.engine.verify.report import CheckResult, VerifyReport

pytestmark = pytest.mark.unit


def _report(environment: str, port: int, *, slow_ms: float) -> VerifyReport:
    return VerifyReport(
        environment=environment,
        results=(
            CheckResult(f"health http://127.0.0.1:{port}/health?detail=true", "health", True, slow_ms, 1, "200"),
            CheckResult(f"health http://127.0.0.1:{port + 1}/health", "health", True, 5.0, 1, "200"),
            CheckResult("database", "database", True, 3.0, 1, "ok"),
            CheckResult(f"llm provider-{port}", "llm", True, 0.0, 0, "key unset", skipped=True),
            CheckResult(
                "latency prompts",
                "latency",
                True,
                40.0,
                20,
                "p95",
                metrics={"p50_ms": 20.0, "p95_ms": 40.0, "max_ms": 50.0, "requests": 20.0, "errors": 0.0},
            ),
            CheckResult("resources backend", "resources", True, 0.0, 1, "cpu", metrics={"cpu_percent": 3.5}),
            CheckResult("disk data", "disk", True, 0.0, 1, "free", metrics={"free_mb": 900.0, "free_percent": 40.0}),
            CheckResult("disk logs", "disk", True, 0.0, 1, "free", metrics={"free_mb": 500.0, "free_percent": 60.0}),
            CheckResult("llm_latency openai", "llm_latency", True, 300.0, 1, "ok", metrics={"latency_ms": 300.0}),
        ),
        started_at="2026-12-04T10:00:00+00:00",
        duration_ms=123.4,
    )


def test_figures_are_keyed_by_kind_not_by_url_and_drop_what_is_always_zero() -> None:
    staging = health_figures(_report("staging", 8001, slow_ms=12.0))
    production = health_figures(_report("production", 9001, slow_ms=30.0))
    assert staging.keys() == production.keys()  # one chart per figure, whatever the URLs
    assert not any("http" in k or "provider" in k or "backend" in k for k in staging)
    assert staging["health_latency_ms"] == 12.0 and production["health_latency_ms"] == 30.0  # the slowest URL
    assert staging["disk_free_mb"] == 500.0 and staging["disk_free_percent"] == 40.0  # the fullest disk
    assert staging["latency_p95_ms"] == 40.0 and staging["llm_completion_ms"] == 300.0
    # A measured-nothing latency (resources, disk), a skipped check and the configured request count are
    # not figures: each would be a chart of one constant.
    assert {"resources_latency_ms", "disk_latency_ms", "llm_latency_ms", "latency_requests"}.isdisjoint(staging)
    assert staging["checks"] == 9 and staging["failed"] == 0


def test_each_environment_has_an_asset_of_its_own_for_its_lines() -> None:
    assert [s.key.path for s in ENVIRONMENT_HEALTH] == [
        ["health", "development"],
        ["health", "staging"],
        ["health", "production"],
    ]
    observation = environment_observation(_report("staging", 8001, slow_ms=12.0), "verify")
    assert observation.asset_key.path == ["health", "staging"]
    assert observation.metadata["health_latency_ms"].value == 12.0
