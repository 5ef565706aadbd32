"""What schedules and sensors share: their on/off state from the config, and the per-environment schedule."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from dagster import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    MultiPartitionKey,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)
from dagster._core.definitions.job_definition import JobDefinition
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.location import location_timezone, tick_settings
from ultra_ops.engine.settings import Environment, Settings

ExecutableDefinition = JobDefinition | UnresolvedAssetJobDefinition


def schedule_status(settings: Settings | None, name: str) -> DefaultScheduleStatus:
    on = settings is not None and settings.calendar.running.get(name, False)
    return DefaultScheduleStatus.RUNNING if on else DefaultScheduleStatus.STOPPED


def sensor_status(settings: Settings | None, name: str) -> DefaultSensorStatus:
    on = settings is not None and settings.calendar.running.get(name, False)
    return DefaultSensorStatus.RUNNING if on else DefaultSensorStatus.STOPPED


def per_environment_schedule(
    settings: Settings | None,
    name: str,
    job: ExecutableDefinition,
    cron: str,
    description: str,
    operation: str,
    *,
    period: Callable[[datetime], str] = lambda when: f"{when:%Y-%m-%d}",
    partition: Callable[[str, datetime], str | MultiPartitionKey] = lambda env, _when: env,
    wanted: Callable[[Environment], bool] = lambda _env: True,
) -> ScheduleDefinition:
    """A schedule that starts `job` once per configured environment each tick, in the config's time
    zone, with one run key per environment and period so a tick never runs twice."""

    @schedule(
        name=name,
        job=job,
        cron_schedule=cron,
        execution_timezone=location_timezone(settings),
        default_status=schedule_status(settings, name),
        description=description,
    )
    def evaluate(context: ScheduleEvaluationContext) -> list[RunRequest] | SkipReason:
        current = tick_settings()
        if isinstance(current, SkipReason):
            return current
        when = context.scheduled_execution_time
        return [
            RunRequest(
                run_key=f"{name}:{env.name}:{period(when)}",
                partition_key=partition(env.name, when),
                tags=tags.launch_tags(env.name, operation),
            )
            for env in current.environments.values()
            if wanted(env)
        ]

    return evaluate
