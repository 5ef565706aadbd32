"""Asset checks of the backups asset: checksums, the dump's table of contents, the restore test and
freshness.

In the nightly run they check the partition's backup: the newest of that day and environment. Run
on their own (backup_checks_job, `ultra-ops backups verify --restore-test`, or from the UI) they
check the newest backup of the run's environment (its `ultra_ops/environment` tag); a run that names
no environment is refused, saying how to name one. Every backup's cheap checks are also evaluated in
the run that took it (cheap_checks.py, with freshness), the restore test weekly (schedules.py), and
freshness again by the backup freshness sensor once the newest backup is too old.
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotation of a check as a type.
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    Failure,
    MetadataValue,
    asset_check,
)

from ultra_ops.defs.backups.cheap_checks import (
    CHECKSUMS,
    DUMP_READABLE,
    Outcome,
    checksums_outcome,
    dump_readable_outcome,
)
from ultra_ops.defs.backups.records import BACKUPS
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.resources import OpsSettings
from ultra_ops.defs.shared.steps import Step, load, step
from ultra_ops.engine.backups.store import (
    BackupInfo,
    backup_age_hours,
    backups_of_day,
    get_backup,
    list_backups,
    newest_good_backup,
)
from ultra_ops.engine.backups.trial_restore import RestoreTestReport, restore_test
from ultra_ops.engine.errors import UltraOpsError


@dataclass(frozen=True)
class Target:
    """What a check looks at in one environment: a day's newest backup, one backup, or the newest."""

    environment: str
    day: date | None = None
    backup_id: str | None = None


def _targets(context: AssetCheckExecutionContext) -> list[Target]:
    """The run's partition; else its environment tag (and backup id tag); else none."""
    if context.has_partition_key:
        keys = context.partition_key.keys_by_dimension
        return [Target(keys["environment"], day=date.fromisoformat(keys["day"]))]
    environment = context.run.tags.get(tags.ENVIRONMENT)
    return [Target(environment, backup_id=context.run.tags.get(tags.BACKUP_ID))] if environment else []


def _evaluate(
    context: AssetCheckExecutionContext,
    settings: OpsSettings,
    outcome_of: Callable[[Step, Target, str], Outcome],
    severity_of: Callable[[dict[str, Any]], AssetCheckSeverity] | None = None,
) -> AssetCheckResult:
    """Run `outcome_of(step, target, timezone)` for each target environment; one result for them all."""
    loaded = load(settings)
    targets = _targets(context)
    if not targets:
        # "Execute" on the asset page starts a run with neither: checking every environment at once
        # would bypass the queue's one run per environment, and report on nothing in particular.
        raise Failure(
            description=f"{context.check_specs[0].name} checks one environment's backup, and this run names none: "
            f"launch backup_checks_job with the tag {tags.ENVIRONMENT}=<{'|'.join(loaded.environments)}> "
            "(Launchpad > Edit tags), or run `ultra-ops backups verify --environment NAME`",
            allow_retries=False,
        )
    outcomes: dict[str, Outcome] = {}
    for target in targets:
        with step(context.op_execution_context, loaded, target.environment) as s:
            try:
                outcomes[target.environment] = outcome_of(s, target, loaded.timezone)
            except UltraOpsError as exc:  # what the check found wrong: red, not a failed step
                outcomes[target.environment] = (False, f"{target.environment}: {s.redact(str(exc))}", {})
    passed = all(ok for ok, _, _ in outcomes.values())
    if len(outcomes) == 1:
        metadata = {"environment": next(iter(outcomes)), **next(iter(outcomes.values()))[2]}
    else:
        metadata = {
            "environments": MetadataValue.json(
                {
                    env: {"passed": ok, "detail": text, **{k: getattr(v, "value", v) for k, v in meta.items()}}
                    for env, (ok, text, meta) in outcomes.items()
                }
            )
        }
    description = "; ".join(text for ok, text, _ in outcomes.values() if not ok or len(outcomes) == 1)
    severity = severity_of(metadata) if severity_of and not passed else AssetCheckSeverity.ERROR
    return AssetCheckResult(passed=passed, description=description[:2000], metadata=metadata, severity=severity)


def _newest_backup(check: Callable[[Step, BackupInfo], Outcome]) -> Callable[[Step, Target, str], Outcome]:
    """`check` of the target's backup: the day's newest, the one named, or the newest of all."""

    def outcome(s: Step, target: Target, timezone: str) -> Outcome:
        if target.backup_id:
            kept = [get_backup(s.env, target.backup_id)]
        else:
            kept = backups_of_day(s.env, target.day, timezone) if target.day else list_backups(s.env)
        if not kept:
            return False, f"{s.env.name}: no backup{f' of {target.day}' if target.day else ''} is kept to check", {}
        try:
            return check(s, kept[0])
        except UltraOpsError as exc:
            text = s.redact(str(exc))  # the engine's errors name the backup already
            return False, f"{s.env.name}: {text}", {"backup_id": kept[0].id}

    return outcome


@asset_check(
    asset=BACKUPS,
    name=CHECKSUMS,
    description="Every file of the backup is there, with the size and sha256 its manifest records. Evaluated "
    "in the run that takes each backup, and nightly.",
)
def backup_checksums(context: AssetCheckExecutionContext, settings: OpsSettings) -> AssetCheckResult:
    return _evaluate(context, settings, _newest_backup(lambda s, info: checksums_outcome(s.env, info, s.redact)))


@asset_check(
    asset=BACKUPS,
    name=DUMP_READABLE,
    description="pg_restore --list reads the dump, and its table of contents has the data of every table "
    "counted at backup time. Evaluated in the run that takes each backup, and nightly.",
)
def backup_dump_readable(context: AssetCheckExecutionContext, settings: OpsSettings) -> AssetCheckResult:
    return _evaluate(context, settings, _newest_backup(lambda s, info: dump_readable_outcome(s.env, info, s.redact)))


def restore_test_metadata(report: RestoreTestReport) -> dict[str, Any]:
    return {
        "backup_id": report.backup_id,
        "passed": report.passed,
        "tables": len(report.restored),
        "rows": sum(report.restored.values()),
        "missing_tables": MetadataValue.json(report.missing),
        "mismatched": MetadataValue.json(
            {t: {"at_backup": e, "restored": r} for t, (e, r) in report.mismatched.items()}
        ),
        "row_counts": MetadataValue.json(report.restored),
        "duration_s": report.duration_s,
        "restore_s": report.restore_s,
    }


@asset_check(
    asset=BACKUPS,
    name="backup_restore_test",
    description="The backup restores into a scratch database of its own (dropped after, also on failure), "
    "and every table has the row count recorded at backup time. Backfill a range of days with "
    "the backup_restore_test asset.",
)
def backup_restore_test_check(context: AssetCheckExecutionContext, settings: OpsSettings) -> AssetCheckResult:
    def checked(s: Step, info: BackupInfo) -> Outcome:
        report = restore_test(s.env, info, log=s.log, redact=s.redact)
        return (
            report.passed,
            f"{s.env.name}: {report.summary()}",
            {**restore_test_metadata(report), "counts_recorded": report.expected is not None},
        )

    # A backup from before row counts were recorded restores, but cannot be compared: a warning.
    return _evaluate(
        context,
        settings,
        _newest_backup(checked),
        severity_of=lambda meta: (
            AssetCheckSeverity.WARN if meta.get("counts_recorded") is False else AssetCheckSeverity.ERROR
        ),
    )


@asset_check(
    asset=BACKUPS,
    name="backup_freshness",
    description="The environment's newest good backup (its checksums verify) is younger than its "
    "[environments.X.backup] max_age_hours (26 h by default).",
)
def backup_freshness(context: AssetCheckExecutionContext, settings: OpsSettings) -> AssetCheckResult:
    def checked(s: Step, _target: Target, _timezone: str) -> Outcome:
        environment = s.env.name
        limit = s.env.backup.max_age_hours
        good, bad = newest_good_backup(s.env)
        meta: dict[str, Any] = {"max_age_hours": limit, "damaged_newer": MetadataValue.json(dict(bad))}
        if good is None:
            return False, f"{environment}: no good backup at all", meta
        age = round(backup_age_hours(good), 2)
        meta.update({"newest_good_backup_id": good.id, "age_hours": age})
        fresh = age <= limit
        return (
            fresh,
            (
                f"{environment}: newest good backup {good.id} is {age:.1f} h old "
                f"({'within' if fresh else 'past'} the {limit:g} h limit)"
            ),
            meta,
        )

    return _evaluate(context, settings, checked)


BACKUP_CHECKS = [backup_checksums, backup_dump_readable, backup_restore_test_check, backup_freshness]
