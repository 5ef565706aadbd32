"""The ultra_ops code location: each domain's definitions, merged. Loading it touches no service."""

from dagster import Definitions

from ultra_ops.defs.backups.assets import BACKUP_ASSETS
from ultra_ops.defs.backups.checks import BACKUP_CHECKS
from ultra_ops.defs.backups.jobs import BACKUP_JOBS
from ultra_ops.defs.backups.schedules import backup_schedules, restore_test_schedules
from ultra_ops.defs.backups.sensors import backup_sensors
from ultra_ops.defs.calendar.jobs import CALENDAR_JOBS
from ultra_ops.defs.calendar.schedules import calendar_schedules
from ultra_ops.defs.calendar.view import release_calendar, release_calendar_job, view_schedules
from ultra_ops.defs.maintenance.jobs import MAINTENANCE_ASSETS, MAINTENANCE_JOBS
from ultra_ops.defs.maintenance.schedules import maintenance_schedules
from ultra_ops.defs.platform.jobs import PLATFORM_JOBS
from ultra_ops.defs.platform.schedules import platform_schedules
from ultra_ops.defs.release.assets import RELEASE_ASSETS
from ultra_ops.defs.release.checklist import CHECKLIST_ASSETS
from ultra_ops.defs.release.jobs import RELEASE_JOBS
from ultra_ops.defs.release.sensors import release_sensors
from ultra_ops.defs.shared.jobs import LOGGERS
from ultra_ops.defs.shared.resources import EnvironmentLocks, OpsSettings

# One instance under both keys: the locks depend on the settings (set up first, torn down last).
SETTINGS = OpsSettings()

defs = Definitions(
    assets=[*BACKUP_ASSETS, *RELEASE_ASSETS, *CHECKLIST_ASSETS, *MAINTENANCE_ASSETS, release_calendar],
    asset_checks=BACKUP_CHECKS,
    jobs=[*RELEASE_JOBS, *BACKUP_JOBS, *CALENDAR_JOBS, release_calendar_job, *MAINTENANCE_JOBS, *PLATFORM_JOBS],
    schedules=[
        *calendar_schedules(),
        *view_schedules(),
        *backup_schedules(),
        *restore_test_schedules(),
        *maintenance_schedules(),
        *platform_schedules(),
    ],
    sensors=[*release_sensors(), *backup_sensors()],
    resources={"settings": SETTINGS, "locks": EnvironmentLocks(settings=SETTINGS)},
    loggers=LOGGERS,  # asset jobs take their loggers from here; the op jobs name the same ones
)
