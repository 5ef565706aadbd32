"""The environment's health state as an asset: every verification (verify runs, a deploy's window
samples, the health monitor's runs) is a materialization of its environment's partition, with each
check's status and latency as numbers the UI plots, and asset checks per kind of check."""

from collections.abc import Iterable, Iterator
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    define_asset_job,
    in_process_executor,
    multi_asset,
)

from ultra_ops.defs.release.health_figures import health_figures, log_environment_figures
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.partitions import environment_config, environment_partitions
from ultra_ops.defs.shared.resources import OpsSettings
from ultra_ops.defs.shared.steps import Step, partition_step
from ultra_ops.engine.verify.report import VerifyReport
from ultra_ops.engine.verify.runner import verify_environment
from ultra_ops.engine.verify.window import WindowReport

HEALTH_STATE = AssetKey("health_state")

# One asset check per kind of result: a check's history is that kind's history in the UI.
CHECK_OF_KIND = {
    "health": ("health_endpoints", "The health URLs answer 200 and report every component ok."),
    "database": ("database", "The database answers the probe queries within its latency budget."),
    "redis": ("redis", "Redis answers PING."),
    "llm": ("llm_providers", "Each LLM provider lists its models with the configured key."),
    "endpoint": ("api_endpoints", "The API endpoints answer their expected status within budget."),
    "smoke": ("smoke_tests", "Every smoke step (log in, prompt, upload, metrics) answers as expected."),
    "latency": ("latency_percentiles", "p50, p95 and max of each critical endpoint are within budget."),
    "resources": ("service_resources", "CPU, memory and open files of each service are within limits."),
    "disk": ("disk_headroom", "The data, log and backup folders' disks have their free space."),
    "database_performance": (
        "database_performance",
        "Connection headroom; statements slower than the limit since the deploy (a warning).",
    ),
    "llm_latency": ("llm_latency", "One small completion per provider answers within budget."),
}
HEALTHY = "healthy"
WINDOW = "verification_window"
HEALTH_CHECKS = [
    AssetCheckSpec(
        HEALTHY,
        asset=HEALTH_STATE,
        blocking=True,
        description="Red when the environment's last health state is not healthy.",
    ),
    AssetCheckSpec(
        WINDOW,
        asset=HEALTH_STATE,
        blocking=True,
        description="The last verification window passed (or a person approved it).",
    ),
    *(
        AssetCheckSpec(name, asset=HEALTH_STATE, blocking=True, description=text)
        for name, text in CHECK_OF_KIND.values()
    ),
]


def health_metadata(report: VerifyReport, step: Step, source: str) -> dict[str, Any]:
    """The materialization's metadata: the figures the UI plots, under the same keys in every
    environment and release (health_figures.py), then the whole report to read."""
    metadata: dict[str, Any] = {
        "environment": report.environment,
        "source": source,
        "healthy": report.ok,
        **health_figures(report),
    }
    metadata["results"] = MetadataValue.md("```\n" + step.redact(report.table()) + "\n```")
    metadata["report"] = MetadataValue.json(step.redact.value(report.to_dict()))
    return metadata


def check_results(report: VerifyReport) -> list[AssetCheckResult]:
    """One result per kind present in the report, and `healthy`."""
    out = [
        AssetCheckResult(
            check_name=HEALTHY,
            passed=report.ok,
            severity=AssetCheckSeverity.ERROR,
            metadata={"failed": len(report.failures), "summary": report.summary()},
        )
    ]
    for kind, (name, _text) in CHECK_OF_KIND.items():
        results = [r for r in report.results if r.kind == kind]
        if not results:
            continue
        failed = [r for r in results if not r.ok]
        blocking = any(r.blocking for r in failed)
        metadata: dict[str, Any] = {"failed": len(failed), "checked": len(results)}
        for r in results:
            metadata[r.name] = f"{r.status}: {r.detail}"[:200]
            for key, value in r.metrics.items():
                metadata[f"{r.name} {key}"] = round(value, 3)
        out.append(
            AssetCheckResult(
                check_name=name,
                passed=not failed,
                severity=AssetCheckSeverity.ERROR if blocking else AssetCheckSeverity.WARN,
                metadata=metadata,
            )
        )
    return out


def _evaluations(results: Iterable[AssetCheckResult], partition: str) -> list[AssetCheckEvaluation]:
    return [
        AssetCheckEvaluation(
            asset_key=HEALTH_STATE,
            check_name=r.check_name,
            passed=r.passed,
            severity=r.severity,
            metadata=r.metadata,
            partition=partition,
        )
        for r in results
    ]


def record_health(context: OpExecutionContext, step: Step, report: VerifyReport, source: str) -> None:
    """A verification run by an op (verify, deploy, rollback) as the partition's materialization."""
    context.log_event(
        AssetMaterialization(
            asset_key=HEALTH_STATE, partition=step.env.name, metadata=health_metadata(report, step, source)
        )
    )
    log_environment_figures(context, report, source)
    for evaluation in _evaluations(check_results(report), step.env.name):
        context.log_event(evaluation)
    step.log.info(report.summary())


def record_window(context: OpExecutionContext, step: Step, window: WindowReport) -> None:
    """A verification window's outcome: the `verification_window` check and an observation with the
    whole window (what `ultra-ops verify --window` prints)."""
    decision = window.decision or {}
    metadata = {
        "outcome": window.outcome,
        "failed_samples": window.failed_samples,
        # The config's numbers, as text: plotted they would be charts of one constant.
        "rule": f"{len(window.samples)} samples, at most {window.failure_limit} may fail",
        "decided_by": decision.get("decided_by") or "",
        "window": MetadataValue.json(step.redact.value(window.to_dict())),
    }
    context.log_event(AssetObservation(asset_key=HEALTH_STATE, partition=step.env.name, metadata=metadata))
    evaluation = AssetCheckResult(
        check_name=WINDOW,
        passed=window.ok,
        severity=AssetCheckSeverity.ERROR,
        metadata={k: v for k, v in metadata.items() if k != "window"},
    )
    for e in _evaluations([evaluation], step.env.name):
        context.log_event(e)
    (step.log.info if window.ok else step.log.warning)(step.redact(window.summary()))


# A multi_asset so that its check outputs are optional (can_subset): a verification yields the
# kinds of check the environment configures and measures, and leaves the others' last result alone.
@multi_asset(
    name="health_state",
    specs=[
        AssetSpec(
            HEALTH_STATE,
            group_name="health",
            owners=["team:ops"],
            description="The environment's health: each verification's per-check status and latency (health URLs, "
            "database, Redis, LLM providers, API endpoints, smoke tests, and performance where a deploy or "
            "verify measures it), under figure names that are the same in every environment (health_latency_ms, "
            "checks, failed ...). Recorded by every verify run and deploy verification, and by the health "
            "monitor sensor when /health?detail=true changes. One environment's lines over time: health/<env>.",
        )
    ],
    partitions_def=environment_partitions,
    check_specs=HEALTH_CHECKS,
    can_subset=True,
)
def health_state(context: AssetExecutionContext, settings: OpsSettings) -> Iterator[MaterializeResult]:
    """A verification without the performance load: the health monitor starts this on every change."""
    with partition_step(context.op_execution_context, settings) as s:
        report = verify_environment(s.env, redact=s.redact, log=s.log, performance=False)
        s.log.info(report.summary())
        log_environment_figures(context.op_execution_context, report, "monitor")
        result = MaterializeResult(
            asset_key=HEALTH_STATE, metadata=health_metadata(report, s, "monitor"), check_results=check_results(report)
        )
    yield result


health_state_job = define_asset_job(
    "health_state_job",
    selection=[health_state],
    config=environment_config(),
    executor_def=in_process_executor,
    tags={tags.DOMAIN: "release", tags.OPERATION: "health"},
    description="Record an environment's health state now (the health_state asset, with its checks).",
)
