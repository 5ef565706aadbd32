"""The maintenance domain's schedules: VACUUM weekly, the cache hourly, the logs daily."""

from datetime import datetime, timedelta

from dagster import MultiPartitionKey, ScheduleDefinition

from ultra_ops.defs.maintenance.jobs import cache_stats_job, log_archive_job, vacuum_job
from ultra_ops.defs.shared.automations import per_environment_schedule
from ultra_ops.defs.shared.location import loaded_settings, location_timezone
from ultra_ops.engine.settings.calendar import DAYS, CalendarSettings


def _yesterday(when: datetime) -> str:
    return f"{when - timedelta(days=1):%Y-%m-%d}"


def maintenance_schedules() -> list[ScheduleDefinition]:
    settings = loaded_settings()
    calendar = settings.calendar if settings else CalendarSettings()
    vacuum = calendar.weekly_vacuum
    zone = location_timezone(settings)
    return [
        per_environment_schedule(
            settings,
            "weekly_vacuum_schedule",
            vacuum_job,
            vacuum.cron(),
            f"VACUUM ANALYZE every environment's database every {DAYS[vacuum.weekday].capitalize()} at "
            f"{vacuum.at:%H:%M} {zone} (the database_maintenance asset; never VACUUM FULL).",
            "vacuum",
        ),
        per_environment_schedule(
            settings,
            "hourly_cache_check_schedule",
            cache_stats_job,
            f"{calendar.cache_check_minute} * * * *",
            "Read every environment's Redis INFO into the cache_state asset, hourly at "
            f":{calendar.cache_check_minute:02d}, with its checks.",
            "cache stats",
            period=lambda when: f"{when:%Y-%m-%dT%H}",
            wanted=lambda env: env.redis is not None,
        ),
        per_environment_schedule(
            settings,
            "daily_log_archive_schedule",
            log_archive_job,
            "30 0 * * *",
            f"00:30 {zone} nightly: rotate every environment's logs and archive the day before, verified (a day "
            "with nothing to archive is recorded as such, not as an archive).",
            "archive logs",
            period=_yesterday,
            partition=lambda env, when: MultiPartitionKey({"day": _yesterday(when), "environment": env}),
        ),
    ]
