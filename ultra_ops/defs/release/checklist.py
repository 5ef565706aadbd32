"""The pre-release checklist in Dagster: its items as an observation of the environment's checklist,
recorded by checklist_job and by deploy_job's blocking second step alike."""

from dagster import AssetKey, AssetObservation, AssetSpec, MetadataValue, OpExecutionContext, op

from ultra_ops.defs.release.config import ChecklistConfig
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.resources import OpsSettings
from ultra_ops.defs.shared.steps import Step, partition_step
from ultra_ops.engine.deployed import deployed_version
from ultra_ops.engine.inputs import validate_tag
from ultra_ops.engine.release.checklist import ChecklistReport, require_checklist, run_checklist
from ultra_ops.engine.settings import ENVIRONMENT_NAMES


def checklist_key(environment: str) -> AssetKey:
    return AssetKey(["checklist", environment])


# Declared, so the catalog explains what the observations are: observed, never materialized.
CHECKLIST_ASSETS = [
    AssetSpec(
        checklist_key(name),
        group_name="release",
        owners=["team:ops"],
        description=f"The release document's pre-release checklist of {name}: each observation is one run of "
        "it (checklist_job, or deploy_job's blocking second step) with every item, its evidence and status.",
    )
    for name in ENVIRONMENT_NAMES
]


def report_checklist(context: OpExecutionContext, s: Step, report: ChecklistReport) -> None:
    """The checklist's items with their evidence, as an observation of the environment's checklist."""
    context.log_event(
        AssetObservation(
            asset_key=checklist_key(s.env.name),
            metadata={
                "environment": s.env.name,
                "version": report.version or "",
                "ok": report.ok,
                "failed": len(report.failures),
                "items": len(report.items),
                "table": MetadataValue.md("```\n" + s.redact(report.table()) + "\n```"),
                "checklist": MetadataValue.json(s.redact.value(report.to_dict())),
            },
        )
    )
    s.log.info(report.summary())


@op
def checklist_items(context: OpExecutionContext, config: ChecklistConfig, settings: OpsSettings) -> None:
    """Every item of the pre-release checklist with its evidence; the run fails when one fails. Takes
    no lock: it changes nothing (its rate limit burst only costs the checker's own address)."""
    with partition_step(context, settings) as s:
        version = config.tag or deployed_version(s.env)
        if config.tag:
            validate_tag(config.tag)
        if version:
            context.instance.add_run_tags(context.run_id, {tags.VERSION: version})
        report = run_checklist(s.env, version=version, redact=s.redact, log=s.log)
        report_checklist(context, s, report)
        require_checklist(report)
