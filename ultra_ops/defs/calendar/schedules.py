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
from ultra_ops.defs.shared.location import loaded_settings, location_timezone, tick_settings
from ultra_ops.engine.calendar.ticks import release_tick
from ultra_ops.engine.notify.webhook import message, send
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Settings
from ultra_ops.engine.settings.calendar import DAYS, CalendarSettings
from ultra_ops.engine.versions import PROMOTED


def _release_schedule(environment: str, settings: Settings | None) -> ScheduleDefinition:
    calendar = settings.calendar if settings else CalendarSettings()
    rule = calendar.release(environment)
    assert rule is not None
    name = f"{environment}_release_schedule"
    day = DAYS[rule.weekday].capitalize()
    # The UI renders the cron as "only on Thursday": the description says which Thursdays.
    if rule.every_weeks == 1:
        every = f"Every {day}"
    else:
        nth = "other" if rule.every_weeks == 2 else f"{rule.every_weeks}th"
        every = (
            f"Every {nth} {day} (every {rule.every_weeks} weeks from {rule.anchor}; the cron fires weekly and "
            "the off weeks skip)"
        )
    zone = location_timezone(settings)

    @schedule(
        name=name,
        job=deploy_job,
        cron_schedule=rule.cron(),
        execution_timezone=location_timezone(settings),
        default_status=schedule_status(settings, name),
        description=f"{every} at {rule.at:%H:%M} {zone}: deploy the newest release verified one environment "
        f"below to {environment}; skips in freezes and on holidays"
        + (", and until someone approves the version (see pending_decisions)." if environment == "production" else ".")
        + " The coming ticks: the release_calendar asset.",
    )
    def release(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        current = tick_settings()
        if isinstance(current, SkipReason):
            return current
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
