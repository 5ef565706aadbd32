"""The numbers of a health state the UI plots, one line per environment.

The UI draws one line per metadata key of an asset: over its events (every environment's on one
line, for an asset partitioned by environment) or over its partitions (one point each). So the
figures are keyed by kind of check, never by URL, provider or service name (the same keys in every
environment and every release), and each environment also gets an asset of its own, `health/<env>`,
whose plots are that environment's lines over time. Figures that can only be 0 (the latency of a
check that measures none: resources, disk, statements) are left out.
"""

from __future__ import annotations

from dagster import AssetKey, AssetObservation, AssetSpec, OpExecutionContext

from ultra_ops.engine.settings import ENVIRONMENT_NAMES
from ultra_ops.engine.verify.report import VerifyReport

# The kinds whose latency is a measured round trip; the others' latency is 0 by construction.
_TIMED = ("health", "database", "redis", "llm", "endpoint", "smoke")
# Figures where less is worse: of several results of a kind, the smallest is the one to watch.
_LOWEST_IS_WORST = ("free_mb", "free_percent", "connections_free_share")
# Not a measurement: the number of requests a latency check sends is the config's.
_NOT_MEASURED = ("requests",)
# A completion's latency is not the provider listing's (`llm_latency_ms`).
_RENAMED = {("llm_latency", "latency_ms"): "llm_completion_ms"}


def health_figures(report: VerifyReport) -> dict[str, float]:
    """`checks`, `failed`, `warnings`, `duration_ms`, then per kind of check its worst figure:
    `<kind>_latency_ms` (the slowest of its results) and `<kind>_<metric>` (p95_ms, cpu_percent ...)."""
    figures: dict[str, float] = {
        "checks": len(report.results),
        "failed": len(report.failures),
        "warnings": len(report.warnings),
        "duration_ms": round(report.duration_ms, 1),
    }
    worst: dict[str, float] = {}
    for r in report.results:
        if r.skipped:
            continue  # not measured: a 0 would be a false point on the line
        if r.kind in _TIMED and r.attempts:
            worst[f"{r.kind}_latency_ms"] = max(worst.get(f"{r.kind}_latency_ms", 0.0), r.latency_ms)
        for key, value in r.metrics.items():
            if key in _NOT_MEASURED:
                continue
            name = _RENAMED.get((r.kind, key), f"{r.kind}_{key}")
            if name in worst:
                value = min(worst[name], value) if key in _LOWEST_IS_WORST else max(worst[name], value)
            worst[name] = value
    figures.update({k: round(v, 3) for k, v in sorted(worst.items())})
    return figures


def environment_health_key(environment: str) -> AssetKey:
    return AssetKey(["health", environment])


ENVIRONMENT_HEALTH = [
    AssetSpec(
        environment_health_key(name),
        group_name="health",
        owners=["team:ops"],
        description=f"{name}'s health figures over time, observed with every health_state of {name}: "
        "the Plots tab draws one line per figure for this environment alone (checks, failed, duration_ms, "
        "health_latency_ms, database_latency_ms, latency_p95_ms ...). The checks and the report are on "
        "health_state.",
    )
    for name in ENVIRONMENT_NAMES
]


def environment_observation(report: VerifyReport, source: str) -> AssetObservation:
    return AssetObservation(
        asset_key=environment_health_key(report.environment),
        metadata={**health_figures(report), "healthy": report.ok, "source": source},
    )


def log_environment_figures(context: OpExecutionContext, report: VerifyReport, source: str) -> None:
    if report.environment in ENVIRONMENT_NAMES:
        context.log_event(environment_observation(report, source))
