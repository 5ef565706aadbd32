"""What schedules and sensors read when the code location loads: the config, and their on/off state."""

from __future__ import annotations

from dagster import DefaultScheduleStatus, DefaultSensorStatus

from ultra_ops.engine.errors import UltraOpsError
from ultra_ops.engine.settings import Settings, load_settings


def loaded_settings() -> Settings | None:
    """The config as the code location loads; None when it cannot be read. Loading must not fail
    over the config: ticks read it again and report its errors."""
    try:
        return load_settings()
    except (UltraOpsError, OSError):
        return None


def schedule_status(settings: Settings | None, name: str) -> DefaultScheduleStatus:
    on = settings is not None and settings.calendar.running.get(name, False)
    return DefaultScheduleStatus.RUNNING if on else DefaultScheduleStatus.STOPPED


def sensor_status(settings: Settings | None, name: str) -> DefaultSensorStatus:
    on = settings is not None and settings.calendar.running.get(name, False)
    return DefaultSensorStatus.RUNNING if on else DefaultSensorStatus.STOPPED
