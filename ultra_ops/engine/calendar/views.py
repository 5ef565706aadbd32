"""What an operator should see without asking: the coming ticks (what `ultra-ops calendar` prints)
and the decisions that wait for a person, each with the command and the job that answers it.

Plain data and markdown; the Dagster layer shows them as assets (defs/calendar/view.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ultra_ops.engine.calendar.ticks import MAINTENANCE_SCHEDULES, Tick, upcoming
from ultra_ops.engine.clock import local_time
from ultra_ops.engine.settings import Settings
from ultra_ops.engine.verify.decisions import pending
from ultra_ops.engine.versions import PRODUCTION

AWAITING_APPROVAL = "awaiting approval"
NAME = "NAME"  # what the operator replaces with their name


@dataclass(frozen=True)
class PendingDecision:
    """Something that waits for a person: a verification decision or a production approval."""

    kind: str  # "verification decision" or "production approval"
    environment: str
    version: str | None
    since: str  # local time, named zone: when it was asked, or the tick that waits
    what: str
    command: str  # the CLI's answer
    job: str  # the UI's answer: this job ...
    partition: str | None  # ... for this partition (None: not partitioned) ...
    run_config: dict[str, Any] = field(default_factory=dict)  # ... with this config (NAME to fill in)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pending_decisions(settings: Settings, now: datetime, weeks: int = 2) -> list[PendingDecision]:
    """Open verification decisions of every environment, then the production ticks of the next
    `weeks` weeks that wait for an approval."""
    out = []
    for env in settings.environments.values():
        for record in pending(env):
            out.append(
                PendingDecision(
                    kind="verification decision",
                    environment=env.name,
                    version=record.version,
                    since=local_time(record.asked_at, settings.timezone),
                    what=f"deploy run {record.run_id or '-'} waits: {record.summary}",
                    command=f"ultra-ops verify --environment {env.name} --decide approve|rollback --by {NAME} "
                    f"--request {record.id}",
                    job="verification_decision_job",
                    partition=None,
                    run_config={
                        "ops": {
                            "decide_verification": {
                                "config": {
                                    "environment": env.name,
                                    "decision": "approve",  # or rollback
                                    "by": NAME,
                                    "request_id": record.id,
                                }
                            }
                        }
                    },
                )
            )
    if PRODUCTION in settings.environments:
        seen = set()
        for tick in upcoming(settings, now, weeks, PRODUCTION):
            if tick.schedule != f"{PRODUCTION}_release_schedule" or not (tick.skip or "").startswith(AWAITING_APPROVAL):
                continue
            if tick.version in seen:
                continue  # one approval covers the version, whichever tick comes first
            seen.add(tick.version)
            out.append(
                PendingDecision(
                    kind="production approval",
                    environment=PRODUCTION,
                    version=tick.version,
                    since=local_time(tick.at, settings.timezone),
                    what=f"the {PRODUCTION} tick of {local_time(tick.at, settings.timezone)} deploys {tick.version} "
                    "once someone approves it",
                    command=f"ultra-ops approve --environment {PRODUCTION} --tag {tick.version} --by {NAME}",
                    job="approve_job",
                    partition=PRODUCTION,
                    run_config={"ops": {"approve_release": {"config": {"tag": tick.version, "by": NAME}}}},
                )
            )
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def pending_table(items: list[PendingDecision]) -> str:
    if not items:
        return "Nothing waits for a decision."
    rows = ["waiting | environment | version | since | answer with", "--- | --- | --- | --- | ---"]
    rows += [
        f"{i.kind} | {i.environment} | {i.version or '-'} | {i.since} | `{_cell(i.command)}` or {i.job}" for i in items
    ]
    return "\n".join(rows)


def ticks_table(ticks: list[Tick]) -> str:
    if not ticks:
        return "No ticks in that time."
    rows = ["when | schedule | environment | what it would do", "--- | --- | --- | ---"]
    rows += [
        f"{t.at:%a %Y-%m-%d %H:%M %Z} | {t.schedule} | {t.environment} | "
        + _cell(f"skip: {t.skip}" if t.skip else t.action)
        for t in ticks
    ]
    return "\n".join(rows)


def calendar_markdown(settings: Settings, now: datetime, release_weeks: int = 4, maintenance_days: int = 7) -> str:
    """The coming release ticks (`ultra-ops calendar`) and maintenance ticks (`--backups`), in the
    config's time zone."""
    ticks = upcoming(settings, now, release_weeks)
    releases = [t for t in ticks if t.schedule not in MAINTENANCE_SCHEDULES]
    soon = now + timedelta(days=maintenance_days)
    maintenance = [t for t in ticks if t.schedule in MAINTENANCE_SCHEDULES and t.at <= soon]
    return "\n".join(
        [
            f"### Release ticks, next {release_weeks} weeks ({settings.timezone})",
            "",
            ticks_table(releases),
            "",
            f"### Maintenance ticks, next {maintenance_days} days",
            "",
            ticks_table(maintenance),
        ]
    )
