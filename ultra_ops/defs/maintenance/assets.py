"""Maintenance state as assets, partitioned by environment: each VACUUM ANALYZE of the database and
each look at the Redis cache is a materialization, with numbers the UI plots over time."""

import warnings
from collections.abc import Iterator
from dataclasses import asdict
from datetime import date
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetMaterialization,
    AssetObservation,
    BackfillPolicy,
    BetaWarning,
    MaterializeResult,
    MetadataValue,
    MultiPartitionKey,
    asset,
)

from ultra_ops.defs.shared.partitions import environment_days, environment_partitions
from ultra_ops.defs.shared.resources import EnvironmentLocks, OpsSettings
from ultra_ops.defs.shared.steps import load, partition_step, step
from ultra_ops.engine.maintenance.cache import cache_stats
from ultra_ops.engine.maintenance.logs import ArchiveReport, archive_logs, rotate_logs
from ultra_ops.engine.maintenance.vacuum import vacuum_analyze
from ultra_ops.engine.runtimes import get_runtime


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
def database_maintenance(
    context: AssetExecutionContext, settings: OpsSettings, locks: EnvironmentLocks
) -> MaterializeResult:
    with partition_step(context.op_execution_context, settings, locks=locks, operation="vacuum") as s:
        report = vacuum_analyze(s.env, log=s.log, redact=s.redact)
    worst = max((t.dead_ratio for t in report.before), default=0.0)
    table = "\n".join(
        [
            " | ".join(["table", "dead before", "dead after", "dead ratio before", "last autovacuum", "last analyze"]),
            " | ".join(["---"] * 6),
        ]
        + [
            f"{b.table} | {b.dead} | {a.dead} | {b.dead_ratio:.2%} | {b.last_autovacuum or '-'} | "
            f"{a.last_analyze or '-'}"
            for b, a in zip(report.before, report.after, strict=False)
        ]
    )
    return MaterializeResult(
        metadata={
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
        }
    )


_CACHE_CHECKS = [
    AssetCheckSpec(
        "cache_memory_headroom",
        asset="cache_state",
        description="Used memory stays under 90% of maxmemory (where a limit is set).",
    ),
    AssetCheckSpec(
        "cache_no_evictions", asset="cache_state", description="Redis evicted no keys: it has not run out of memory."
    ),
    AssetCheckSpec(
        "cache_hit_ratio", asset="cache_state", description="At least half of the lookups hit, once there were 100."
    ),
]


@asset(
    name="cache_state",
    partitions_def=environment_partitions,
    group_name="maintenance",
    owners=["team:ops"],
    kinds={"redis"},
    check_specs=_CACHE_CHECKS,
    description="The environment's Redis from INFO, hourly: used memory (and its human form), peak, maxmemory, "
    "fragmentation, evicted and expired keys, hit ratio, keys per database.",
)
def cache_state(context: AssetExecutionContext, settings: OpsSettings) -> MaterializeResult:
    with partition_step(context.op_execution_context, settings) as s:
        stats = cache_stats(s.env, redact=s.redact)
    used_of_max, hit_ratio = stats.memory_used_of_max, stats.hit_ratio
    lookups = stats.hits + stats.misses
    checks = [
        AssetCheckResult(
            check_name="cache_memory_headroom",
            passed=used_of_max is None or used_of_max < 0.9,
            severity=AssetCheckSeverity.WARN,
            metadata={"used_of_max": used_of_max or 0.0},
        ),
        AssetCheckResult(
            check_name="cache_no_evictions",
            passed=stats.evicted_keys == 0,
            severity=AssetCheckSeverity.WARN,
            metadata={"evicted_keys": stats.evicted_keys},
        ),
        AssetCheckResult(
            check_name="cache_hit_ratio",
            passed=lookups < 100 or (hit_ratio or 0) >= 0.5,
            severity=AssetCheckSeverity.WARN,
            metadata={"hit_ratio": hit_ratio or 0.0, "lookups": lookups},
        ),
    ]
    return MaterializeResult(
        metadata={
            "used_memory_bytes": stats.used_memory,
            "used_memory_human": stats.used_memory_human,
            "used_memory_peak_bytes": stats.used_memory_peak,
            "maxmemory_bytes": stats.maxmemory,
            "fragmentation_ratio": stats.fragmentation_ratio,
            "evicted_keys": stats.evicted_keys,
            "expired_keys": stats.expired_keys,
            "hit_ratio": hit_ratio if hit_ratio is not None else 0.0,
            "keys": sum(stats.keys_per_db.values()),
            "stats": MetadataValue.json(stats.to_dict()),
        },
        check_results=checks,
    )


_DISK_WARN = 0.90


with warnings.catch_warnings():
    # `backfill_policy` is flagged beta on @asset (a warning at every load); the single-run policy is
    # what `dagster asset materialize --partition-range` requires.
    warnings.simplefilter("ignore", BetaWarning)
    _log_archive_asset = asset(
        name="log_archive",
        partitions_def=environment_days,
        # A range of days in one run, so `dagster asset materialize --partition-range` can backfill it too.
        backfill_policy=BackfillPolicy.single_run(),
        output_required=False,  # days are materialized one by one, and only those with an archive
        group_name="maintenance",
        owners=["team:ops"],
        kinds={"logs"},
        check_specs=[
            AssetCheckSpec(
                "log_disk_headroom",
                asset="log_archive",
                description=f"The log folder's disk is less than {_DISK_WARN:.0%} full.",
            )
        ],
        description="Day D's logs of an environment (a day with none is an observation 'nothing to archive', not a "
        "materialization): rotated, archived into logs/archive/logs_YYYYMMDD.tar.gz "
        "(readable by tar -xzf), verified against the originals before they are removed; the log "
        "folder's disk usage (the document's df -h). Backfill a range of days from the UI or with "
        "`dagster asset materialize --partition-range 2026-11-20|staging...2026-11-26|staging` "
        "(one run for the range).",
    )


def _day_metadata(r: ArchiveReport) -> dict[str, Any]:
    return {
        "archive": r.archive or "",
        "files": len(r.files),
        "bytes_in": r.bytes_in,
        "bytes_archived": r.bytes_archived,
        "log_dir_bytes": r.log_dir_bytes,
        "disk_used_ratio": r.disk_used_ratio,
        "disk_free_bytes": r.disk_free_bytes,
        "archived_files": MetadataValue.json(r.files),
    }


@_log_archive_asset
def log_archive(context: AssetExecutionContext, settings: OpsSettings) -> Iterator[Any]:
    """Each day that archived logs is a materialization of its partition; a day with nothing to
    archive is an observation saying so, never a materialization claiming an archive."""
    days_by_env: dict[str, list[date]] = {}
    for key in context.partition_keys:
        dims = environment_days.get_partition_key_from_str(key).keys_by_dimension
        days_by_env.setdefault(dims["environment"], []).append(date.fromisoformat(dims["day"]))
    loaded = load(settings)
    reports: list[ArchiveReport] = []
    for environment, days in sorted(days_by_env.items()):
        with step(context.op_execution_context, loaded, environment) as s:
            rotate_logs(s.env, log=s.log)
            if s.env.host is not None:
                # The services' logs are on the host: streamed here and archived here (hosts/logs.py).
                from ultra_ops.engine.hosts.logs import archive_host_logs

                reports.extend(archive_host_logs(s.env, sorted(days), log=s.log, redact=s.redact))
                continue
            reports.extend(archive_logs(s.env, day, log=s.log) for day in sorted(days))
    for r in reports:
        partition = MultiPartitionKey({"day": r.day, "environment": r.environment})
        if r.archive and r.files:
            yield AssetMaterialization(asset_key="log_archive", partition=partition, metadata=_day_metadata(r))
            continue
        context.log.info(f"{r.environment} {r.day}: nothing to archive")
        metadata = {k: v for k, v in _day_metadata(r).items() if k not in ("archive", "files", "archived_files")}
        yield AssetObservation(
            asset_key="log_archive",
            partition=partition,
            description="nothing to archive",
            metadata={"status": "nothing to archive", **metadata},
        )
    last = reports[-1]
    yield AssetCheckResult(
        asset_key="log_archive",
        check_name="log_disk_headroom",
        passed=last.disk_used_ratio < _DISK_WARN,
        severity=AssetCheckSeverity.WARN,
        metadata={"disk_used_ratio": last.disk_used_ratio},
    )


@asset(
    name="service_status",
    partitions_def=environment_partitions,
    group_name="maintenance",
    owners=["team:ops"],
    description="The runtime's view of each service of the environment (the document's `docker-compose ps` and "
    "`docker stats`): state, and CPU time and memory where the runtime gives them.",
)
def service_status(context: AssetExecutionContext, settings: OpsSettings) -> MaterializeResult:
    with partition_step(context.op_execution_context, settings) as s:
        services = get_runtime(s.env, log=s.log, redact=s.redact).status()
    rows = [asdict(service) for service in services]
    return MaterializeResult(
        metadata={
            "services": len(services),
            "running": sum(1 for svc in services if svc.running),
            "memory_bytes": sum(svc.memory_bytes or 0 for svc in services),
            "cpu_seconds": round(sum(svc.cpu_seconds or 0 for svc in services), 2),
            "status": MetadataValue.json(rows),
        }
    )
