"""The pending_decisions asset: what waits for a person (a deploy's verification decision, a
production tick's approval), each with its command, and the job and config that answer it from
the UI. Materialized when a request opens or closes (in the run that did it), when an approval is
given, and by release_calendar_schedule, so a tick that starts waiting shows without a run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import yaml
from dagster import AssetKey, AssetMaterialization, AssetSpec, MetadataValue, OpExecutionContext

from ultra_ops.engine.calendar.views import pending_decisions, pending_table
from ultra_ops.engine.events import heard_by
from ultra_ops.engine.secrets import Log
from ultra_ops.engine.settings import Settings
from ultra_ops.engine.verify.decisions import DECISION_TOPIC

PENDING_DECISIONS = AssetKey("pending_decisions")

PENDING_SPEC = AssetSpec(
    PENDING_DECISIONS,
    group_name="operator",
    owners=["team:ops"],
    description="What waits for a person: deploys whose verification window was inconclusive (answer with "
    "verification_decision_job or `ultra-ops verify --decide`), and production release ticks awaiting "
    "approval (approve_job or `ultra-ops approve`). Each materialization is the whole list, with the command "
    "and the job's run config ready to paste into the launchpad (replace NAME). Refreshed when a request "
    "opens or closes, when an approval is given, and by release_calendar_schedule.",
)


def pending_metadata(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    items = pending_decisions(settings, now or datetime.now(UTC))
    launchpad = "\n\n".join(
        f"**{i.kind}, {i.environment} {i.version or ''}**: `{i.command}`\n\n"
        f"{i.job}" + (f" (partition {i.partition})" if i.partition else "") + ":\n\n```yaml\n"
        f"{yaml.safe_dump(i.run_config, sort_keys=False).rstrip()}\n```"
        for i in items
    )
    return {
        "pending": len(items),
        "decisions": MetadataValue.md(pending_table(items)),
        "launchpad": MetadataValue.md(launchpad or "Nothing to launch."),
        "items": MetadataValue.json([i.to_dict() for i in items]),
    }


def pending_materialization(settings: Settings, now: datetime | None = None) -> AssetMaterialization:
    metadata = pending_metadata(settings, now)
    count = metadata["pending"]
    return AssetMaterialization(
        asset_key=PENDING_DECISIONS,
        description=f"{count} decision{'s' if count != 1 else ''} waiting" if count else "nothing waits",
        metadata=metadata,
    )


def log_pending(context: OpExecutionContext, settings: Settings, log: Log) -> None:
    """Record the list as it is now. Never fails the step that changed it: only a warning."""
    try:
        context.log_event(pending_materialization(settings))
    except Exception as exc:  # noqa: BLE001 - the decision matters more than its display
        log.warning(f"pending_decisions not recorded: {exc}")


@contextmanager
def recording_decisions(context: OpExecutionContext, settings: Settings, log: Log) -> Iterator[None]:
    """Record the list each time the step opens or closes a decision request."""
    with heard_by(DECISION_TOPIC, lambda _record: log_pending(context, settings, log)):
        yield
