"""Database maintenance as an asset: each VACUUM ANALYZE of an environment's database is a
materialization of its partition, with the table statistics before and after as metadata that
the UI plots over time."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from ultra_ops.defs.shared.partitions import environment_partitions
from ultra_ops.defs.shared.resources import EnvironmentLocks, OpsSettings
from ultra_ops.defs.shared.steps import environment_of, load, step
from ultra_ops.engine.maintenance.vacuum import vacuum_analyze


@asset(
    name="database_maintenance",
    partitions_def=environment_partitions,
    group_name="maintenance",
    owners=["team:ops"],
    kinds={"postgres"},
    description="VACUUM ANALYZE of the environment's database (never VACUUM FULL): dead tuples, dead ratio, "
                "last autovacuum and analyze per table before and after, database size and duration. Runs "
                "under the environment's lock, so never during a deploy's migration or a restore.",
)
def database_maintenance(context: AssetExecutionContext, settings: OpsSettings,
                         locks: EnvironmentLocks) -> MaterializeResult:
    op_context = context.op_execution_context
    loaded = load(settings)
    with step(op_context, environment_of(op_context), str(loaded.path), locks=locks, operation="vacuum") as s:
        report = vacuum_analyze(s.env, log=s.log, redact=s.redact)
    worst = max((t.dead_ratio for t in report.before), default=0.0)
    table = "\n".join(
        [" | ".join(["table", "dead before", "dead after", "dead ratio before", "last autovacuum", "last analyze"]),
         " | ".join(["---"] * 6)]
        + [f"{b.table} | {b.dead} | {a.dead} | {b.dead_ratio:.2%} | {b.last_autovacuum or '-'} | "
           f"{a.last_analyze or '-'}" for b, a in zip(report.before, report.after, strict=False)])
    return MaterializeResult(metadata={
        "environment": report.environment,
        "tables": len(report.before),
        "dead_tuples_before": report.dead_before,
        "dead_tuples_after": report.dead_after,
        "worst_dead_ratio_before": worst,
        "database_size_bytes": report.size_after,
        "size_change_bytes": report.size_after - report.size_before,
        "duration_s": report.duration_s,
        "per_table": MetadataValue.md(table),
        "report": MetadataValue.json(report.to_dict()),
    })
