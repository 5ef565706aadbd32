"""The backups domain's schedule: a backup of every environment every night."""

from dagster import ScheduleDefinition

from ultra_ops.defs.backups.jobs import backup_job
from ultra_ops.defs.shared.automations import loaded_settings, per_environment_schedule
from ultra_ops.engine.calendar.settings import CalendarSettings


def backup_schedules() -> list[ScheduleDefinition]:
    settings = loaded_settings()
    at = (settings.calendar if settings else CalendarSettings()).nightly_backup
    return [per_environment_schedule(
        settings, "nightly_backup_schedule", backup_job, f"{at.minute} {at.hour} * * *",
        f"Back up every environment nightly at {at:%H:%M}; a backup waits for a deploy's lock.", "backup")]
