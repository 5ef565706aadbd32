"""The release calendar as schedules: staging weekly, production every other week from the anchor,
in the config's time zone. (The maintenance schedules live with their domains.)

Cron times and on/off states come from the config file when the code location loads (a reload
picks up a change); each tick reads the config again and asks the engine what to do, so a tick
that does nothing says why: nothing new to release, a freeze, a holiday, an off week, a held lock.
"""

from __future__ import annotations

from dagster import (
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from ultra_ops.defs.release.config import DeployConfig, deploy_run_config
from ultra_ops.defs.release.jobs import deploy_job
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.automations import schedule_status
from ultra_ops.defs.shared.location import loaded_settings, location_settings
from ultra_ops.engine.calendar.ticks import release_tick
from ultra_ops.engine.errors import UltraOpsError
from ultra_ops.engine.notify.webhook import message, send
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Settings
from ultra_ops.engine.settings.calendar import CalendarSettings
from ultra_ops.engine.versions import PROMOTED


def _release_schedule(environment: str, settings: Settings | None) -> ScheduleDefinition:
    calendar = settings.calendar if settings else CalendarSettings()
    rule = calendar.release(environment)
    assert rule is not None
    name = f"{environment}_release_schedule"
    every = "every week" if rule.every_weeks == 1 else f"every {rule.every_weeks} weeks from {rule.anchor}"

    @schedule(
        name=name,
        job=deploy_job,
        cron_schedule=rule.cron(),
        execution_timezone=settings.timezone if settings else "UTC",
        default_status=schedule_status(settings, name),
        description=f"Deploy the newest release verified one environment below to {environment}, "
        f"{every} at {rule.at:%H:%M}; skips in freezes and on holidays.",
    )
    def release(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        try:
            current = location_settings()
        except UltraOpsError as exc:
            return SkipReason(f"config error: {exc}")
        if environment not in current.environments:
            return SkipReason(f"{environment} is not in the config")
        tick = release_tick(current, environment, context.scheduled_execution_time)
        if tick.skip or tick.version is None:
            # The reason is kept in the tick history: redacted like everything else Dagster records.
            redact = Redactor.for_environment(current.environments[environment])
            if environment == "production" and tick.skip and not tick.skip.startswith("off week"):
                body = message("production_skipped", environment, f"release tick skipped: {tick.skip}")
                send(current.notifications, body, redact=redact, log=context.log)
            return SkipReason(redact(tick.skip or "nothing to deploy"))
        return RunRequest(
            run_key=f"{name}:{tick.version}:{tick.at:%Y-%m-%d}",
            partition_key=environment,
            run_config=deploy_run_config(DeployConfig(tag=tick.version)),
            tags=tags.launch_tags(environment, "deploy", version=tick.version),
        )

    return release


def calendar_schedules() -> list[ScheduleDefinition]:
    settings = loaded_settings()
    return [_release_schedule(environment, settings) for environment in PROMOTED]
