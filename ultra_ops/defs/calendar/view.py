"""The calendar in the UI: the release_calendar asset (the coming release and maintenance ticks
with what each would do, as `ultra-ops calendar` prints them) and pending_decisions, both refreshed
hourly by release_calendar_schedule and at will with release_calendar_job."""

# No `from __future__ import annotations`: Dagster reads the `context` annotation as a type.

from collections.abc import Iterator
from datetime import UTC, datetime

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    ScheduleDefinition,
    define_asset_job,
    in_process_executor,
    multi_asset,
)

from ultra_ops.defs.calendar.pending import PENDING_DECISIONS, PENDING_SPEC, pending_metadata
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.automations import schedule_status
from ultra_ops.defs.shared.location import loaded_settings, location_timezone
from ultra_ops.defs.shared.resources import OpsSettings
from ultra_ops.defs.shared.steps import failures_as_dagster, load
from ultra_ops.engine.calendar.views import calendar_markdown
from ultra_ops.engine.clock import local_time

RELEASE_CALENDAR = AssetKey("release_calendar")


@multi_asset(
    name="release_calendar",
    specs=[
        AssetSpec(
            RELEASE_CALENDAR,
            group_name="operator",
            owners=["team:ops"],
            description="The coming ticks of the release calendar and of maintenance, in the config's time zone, "
            "with what each would do or why it would skip (freeze, holiday, nothing new, awaiting approval): "
            "what `ultra-ops calendar --backups` prints. Production's off weeks are left out, as they never "
            "do anything. Refreshed hourly by release_calendar_schedule.",
        ),
        PENDING_SPEC,
    ],
    can_subset=True,
)
def release_calendar(context: AssetExecutionContext, settings: OpsSettings) -> Iterator[MaterializeResult]:
    loaded = load(settings)
    now = datetime.now(UTC)
    with failures_as_dagster():
        if RELEASE_CALENDAR in context.selected_asset_keys:
            yield MaterializeResult(
                asset_key=RELEASE_CALENDAR,
                metadata={
                    "as_of": local_time(now, loaded.timezone),
                    "ticks": MetadataValue.md(calendar_markdown(loaded, now)),
                },
            )
        if PENDING_DECISIONS in context.selected_asset_keys:
            yield MaterializeResult(asset_key=PENDING_DECISIONS, metadata=pending_metadata(loaded, now))


release_calendar_job = define_asset_job(
    "release_calendar_job",
    selection=[release_calendar],
    executor_def=in_process_executor,
    tags={tags.DOMAIN: "calendar", tags.OPERATION: "calendar"},
    description="Refresh release_calendar (the coming ticks) and pending_decisions (what waits for a person).",
)


def view_schedules() -> list[ScheduleDefinition]:
    settings = loaded_settings()
    name = "release_calendar_schedule"
    return [
        ScheduleDefinition(
            name=name,
            job=release_calendar_job,
            cron_schedule="0 * * * *",
            execution_timezone=location_timezone(settings),
            default_status=schedule_status(settings, name),
            description="Every hour: refresh release_calendar (the coming release and maintenance ticks) and "
            "pending_decisions (deploys waiting for a verification decision, production ticks awaiting approval).",
        )
    ]
