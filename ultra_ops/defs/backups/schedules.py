"""The backups domain's schedules: a backup of every environment every night, and the restore test
of each environment's newest backup every week."""

from dagster import (
    AssetCheckKey,
    MultiPartitionKey,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from ultra_ops.defs.backups.jobs import backup_checks_job, nightly_backup_job
from ultra_ops.defs.backups.records import BACKUPS
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.automations import per_environment_schedule, schedule_status
from ultra_ops.defs.shared.location import loaded_settings, location_timezone, tick_settings
from ultra_ops.engine.settings import Settings
from ultra_ops.engine.settings.calendar import DAYS, CalendarSettings

RESTORE_TEST = AssetCheckKey(BACKUPS, "backup_restore_test")


def _restore_test_schedule(settings: Settings | None) -> ScheduleDefinition:
    name = "weekly_restore_test_schedule"
    rule = (settings.calendar if settings else CalendarSettings()).weekly_restore_test

    @schedule(
        name=name,
        job=backup_checks_job,
        cron_schedule=rule.cron(),
        execution_timezone=location_timezone(settings),
        default_status=schedule_status(settings, name),
        description=f"Every {DAYS[rule.weekday].capitalize()} at {rule.at:%H:%M} {location_timezone(settings)}: "
        "the restore test of each environment's newest backup (the backups asset's backup_restore_test check, "
        "one run per environment, into a scratch database dropped after).",
    )
    def weekly_restore_test(context: ScheduleEvaluationContext) -> list[RunRequest] | SkipReason:
        current = tick_settings()
        if isinstance(current, SkipReason):
            return current
        day = f"{context.scheduled_execution_time:%Y-%m-%d}"
        return [
            RunRequest(
                run_key=f"{name}:{env}:{day}",
                asset_check_keys=[RESTORE_TEST],
                tags={**tags.environment_tags(env), tags.OPERATION: "restore test"},
            )
            for env in current.environments
        ] or SkipReason("no environment in the config")

    return weekly_restore_test


def backup_schedules() -> list[ScheduleDefinition]:
    settings = loaded_settings()
    at = (settings.calendar if settings else CalendarSettings()).nightly_backup
    return [
        per_environment_schedule(
            settings,
            "nightly_backup_schedule",
            nightly_backup_job,
            f"{at.minute} {at.hour} * * *",
            f"Back up every environment nightly at {at:%H:%M} {location_timezone(settings)} (today's partition of "
            "the backups asset, then its checks and restore test); a backup waits for a deploy's lock.",
            "backup",
            partition=lambda env, when: MultiPartitionKey({"day": f"{when:%Y-%m-%d}", "environment": env}),
        )
    ]


def restore_test_schedules() -> list[ScheduleDefinition]:
    return [_restore_test_schedule(loaded_settings())]
