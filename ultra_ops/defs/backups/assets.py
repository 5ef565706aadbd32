"""The backups asset and its restore test, by day and environment.

`backups` is materialized by the nightly schedule, and also, from inside their own runs, by every
other backup: a deploy's, a rollback's safety backup, `ultra-ops backups create` (records.py). Its
partition for (day, environment) thus lists the backups of that day an operator can roll back to.

`backup_restore_test` is the restore test of a day's newest backup, as an asset so that a range of
days can be backfilled (from the UI, or `dagster asset materialize --partition-range`): one run
tests every day of the range, each passing day a materialization with its counts.
"""

import warnings
from collections.abc import Iterator
from datetime import date

from dagster import (
    AssetExecutionContext,
    AssetMaterialization,
    BackfillPolicy,
    BetaWarning,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ultra_ops.defs.backups.checks import restore_test_metadata
from ultra_ops.defs.backups.records import BACKUPS, backup_metadata
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.partitions import environment_days_to_date
from ultra_ops.defs.shared.resources import EnvironmentLocks, OpsSettings
from ultra_ops.defs.shared.steps import load, step
from ultra_ops.engine.backups.create import create_backup
from ultra_ops.engine.backups.store import backups_of_day
from ultra_ops.engine.backups.trial_restore import restore_test
from ultra_ops.engine.calendar.gates import local_today
from ultra_ops.engine.deployed import deployed_version
from ultra_ops.engine.errors import InputError, UltraOpsError


@asset(
    key=BACKUPS,
    partitions_def=environment_days_to_date,
    group_name="backups",
    owners=["team:ops"],
    kinds={"postgres"},
    description="Backups of an environment (database dump, state files, manifest with checksums and the row count "
    "of every table), one partition per day and environment. Every backup is a materialization, "
    "whoever took it: kind scheduled (this asset, nightly), deploy (before a deploy changes anything), "
    "safety (before a rollback or restore replaces the current state) or manual (ultra-ops backups "
    "create). Materializing takes a backup now: only today's partition. An unfilled partition is a day "
    "without a backup of that environment: the days count from 2026-01-01, the first day ultra_ops could "
    "have run, so before this install (or an environment's first backup) every day is unfilled and the "
    "lineage's `% filled` stays low; whether backups are current is what the backup_freshness check says.",
)
def backups(context: AssetExecutionContext, settings: OpsSettings, locks: EnvironmentLocks) -> MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    loaded = load(settings)
    run_tags = context.run.tags
    kind = "scheduled" if run_tags.get(tags.SCHEDULE) or run_tags.get(tags.SENSOR) else "manual"
    with step(
        context.op_execution_context,
        loaded,
        keys["environment"],
        locks=locks,
        operation="backup",
        record_backups=False,
    ) as s:
        today = local_today(loaded).isoformat()
        if keys["day"] != today:
            raise InputError(
                f"a backup is taken now: materialize today's partition ({today}|{s.env.name}), not {keys['day']}"
            )
        info = create_backup(s.env, version=deployed_version(s.env), label=kind, kind=kind, log=s.log, redact=s.redact)
        s.log.info(f"{kind} backup {info.id} of {s.env.name} written ({info.size_bytes / 1e6:.1f} MB)")
    return MaterializeResult(metadata=backup_metadata(info, loaded.timezone))


# BackfillPolicy is a beta parameter of @asset: one warning per code location load and per CLI run,
# about a policy whose behaviour the backfill test pins.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", BetaWarning)

    @asset(
        name="backup_restore_test",
        deps=[BACKUPS],
        partitions_def=environment_days_to_date,
        backfill_policy=BackfillPolicy.single_run(),
        output_required=False,
        group_name="backups",
        owners=["team:ops"],
        kinds={"postgres"},
        description="The restore test of the newest backup of a day: restored into a scratch database of its own "
        "(dropped after, also on failure), every table's row count compared with the count recorded at "
        "backup time. A range of days runs in one run; days whose backups retention removed are skipped; "
        "a day that fails is not materialized and fails the run, naming the tables.",
    )
    def backup_restore_test(context: AssetExecutionContext, settings: OpsSettings) -> Iterator[AssetMaterialization]:
        loaded = load(settings)
        failures, skipped, tested = [], [], 0
        for key in context.partition_keys:
            keys = environment_days_to_date.get_partition_key_from_str(key).keys_by_dimension
            with step(context.op_execution_context, loaded, keys["environment"]) as s:
                kept = backups_of_day(s.env, date.fromisoformat(keys["day"]), loaded.timezone)
                if not kept:
                    skipped.append(key)
                    s.log.warning(f"{key}: no backup of {s.env.name} on {keys['day']} is kept; nothing to test")
                    continue
                tested += 1
                try:
                    report = restore_test(s.env, kept[0], log=s.log, redact=s.redact)
                except UltraOpsError as exc:
                    failures.append(f"{key}: {s.redact(str(exc))}")
                    continue
            if not report.passed:
                failures.append(f"{key}: {report.summary()}")
                continue
            # Each passing day is its own materialization; the asset yields no output of its own.
            yield AssetMaterialization(
                asset_key="backup_restore_test", partition=key, metadata=restore_test_metadata(report)
            )
        if failures or not tested:
            raise Failure(
                description="; ".join(failures)
                if failures
                else "no backup is kept for any day of " + ", ".join(skipped),
                metadata={"failed": len(failures), "skipped": MetadataValue.json(skipped)},
                allow_retries=False,
            )


BACKUP_ASSETS = [backups, backup_restore_test]
