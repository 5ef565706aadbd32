"""The backups domain's schedule: a backup of every environment every night."""

from dagster import MultiPartitionKey, ScheduleDefinition

from ultra_ops.defs.backups.jobs import nightly_backup_job
from ultra_ops.defs.shared.automations import per_environment_schedule
from ultra_ops.defs.shared.location import loaded_settings
from ultra_ops.engine.settings.calendar import CalendarSettings


def backup_schedules() -> list[ScheduleDefinition]:
    settings = loaded_settings()
    at = (settings.calendar if settings else CalendarSettings()).nightly_backup
    return [
        per_environment_schedule(
            settings,
            "nightly_backup_schedule",
            nightly_backup_job,
            f"{at.minute} {at.hour} * * *",
            f"Back up every environment nightly at {at:%H:%M} (today's partition of the backups asset, then its "
            "checks and restore test); a backup waits for a deploy's lock.",
            "backup",
            partition=lambda env, when: MultiPartitionKey({"day": f"{when:%Y-%m-%d}", "environment": env}),
        )
    ]
