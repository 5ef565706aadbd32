"""The platform domain's schedules: old runs purged weekly, Dagster's database backed up nightly."""

from dagster import RunRequest, ScheduleDefinition, ScheduleEvaluationContext, schedule

from ultra_ops.defs.platform.jobs import platform_backup_job, purge_runs_job
from ultra_ops.defs.shared.automations import schedule_status
from ultra_ops.defs.shared.location import loaded_settings, location_timezone


def platform_schedules() -> list[ScheduleDefinition]:
    settings = loaded_settings()
    timezone = location_timezone(settings)

    @schedule(
        name="weekly_run_purge_schedule",
        job=purge_runs_job,
        cron_schedule="0 5 * * 0",
        execution_timezone=timezone,
        default_status=schedule_status(settings, "weekly_run_purge_schedule"),
        description="Sundays 05:00: delete finished runs older than 90 days with their event logs.",
    )
    def weekly_run_purge(context: ScheduleEvaluationContext) -> RunRequest:
        return RunRequest(run_key=f"purge:{context.scheduled_execution_time:%Y-%m-%d}")

    @schedule(
        name="nightly_platform_backup_schedule",
        job=platform_backup_job,
        cron_schedule="15 1 * * *",
        execution_timezone=timezone,
        default_status=schedule_status(settings, "nightly_platform_backup_schedule"),
        description="01:15 nightly: pg_dump Dagster's own PostgreSQL, the newest 7 kept.",
    )
    def nightly_platform_backup(context: ScheduleEvaluationContext) -> RunRequest:
        return RunRequest(run_key=f"platform-backup:{context.scheduled_execution_time:%Y-%m-%d}")

    return [weekly_run_purge, nightly_platform_backup]
