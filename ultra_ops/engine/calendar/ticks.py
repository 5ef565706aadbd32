"""What a calendar tick does: deploy which version where, or skip and say why.

The schedules (defs/calendar) and `ultra-ops calendar` ask the same functions, so the calendar an
operator reads is the one the daemon runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from ultra_ops.engine.calendar.approvals import valid_approval
from ultra_ops.engine.deployed import deployed_version
from ultra_ops.engine.errors import OperationError
from ultra_ops.engine.locks import describe_holder, lock_holder
from ultra_ops.engine.release.branches import release_branches
from ultra_ops.engine.release.downgrade import is_newer
from ultra_ops.engine.release.records import ReleaseStatus, find_releases
from ultra_ops.engine.settings import Settings
from ultra_ops.engine.versions import PRODUCTION, PROMOTED, STAGING, environment_below, is_release


@dataclass(frozen=True)
class Tick:
    schedule: str
    environment: str
    at: datetime  # local time, zone-aware
    action: str  # what it does when it runs: "deploy v1.2.3", "backup"
    skip: str | None = None  # why it does nothing, or None
    version: str | None = None  # the version a release tick deploys

    def describe(self) -> str:
        what = f"skip: {self.skip}" if self.skip else self.action
        return f"{self.at:%a %Y-%m-%d %H:%M %Z}  {self.schedule:<28} {self.environment:<12} {what}"


def _deployed(settings: Settings, environment: str, *, still_good: bool = False) -> list[str]:
    """Versions that reached `environment` by a successful, verified deploy, newest first; with
    `still_good`, only those no rollback has taken out again since (what may be promoted)."""
    if environment not in settings.environments:
        return []
    seen: list[str] = []
    rolled_away: set[str] = set()
    for record in find_releases(settings.environments[environment]):  # newest first
        if still_good and record.operation == "rollback" and record.previous_version:
            rolled_away.add(record.previous_version)  # a later rollback took this version out again
        elif (
            record.operation == "deploy"
            and record.status == ReleaseStatus.DEPLOYED
            and record.version
            and record.version not in rolled_away
            and record.version not in seen
        ):
            seen.append(record.version)
    return seen


def release_candidate(settings: Settings, environment: str) -> tuple[str | None, str]:
    """The version a release tick would deploy, or None and why there is none.

    Staging takes the newest `release/vX.Y.Z` branch of its git_repo that it has not had (without a
    git_repo: the newest release development runs); production the newest release verified on
    staging that production has not had. Never one older than (or equal to) the version running
    there: a tick does not downgrade (the deploy would refuse it).
    """
    version, why = _candidate(settings, environment)
    env = settings.environments.get(environment)
    current = deployed_version(env) if version is not None and env is not None else None
    if version is not None and current is not None and not is_newer(version, current):
        return None, f"nothing newer than {current}, which {environment} runs: its next release would be {version}"
    return version, why


def _candidate(settings: Settings, environment: str) -> tuple[str | None, str]:
    source = environment_below(environment)
    if source is None:
        return None, f"{environment} has no release schedule"
    already = set(_deployed(settings, environment))
    repo = settings.environments[environment].git_repo if environment in settings.environments else None
    if environment == STAGING and repo is not None:
        # The release document's release branches: what `ultra-ops release-branch` made from main.
        # Only the newest: an older branch staging skipped is never deployed over a newer one.
        branches = release_branches(repo)
        if branches and branches[0][0] not in already:
            return branches[0][0], ""
        newest = f"the newest, release/{branches[0][0]}, is on staging already" if branches else "there is none"
        return None, f"nothing new to release: no release/vX.Y.Z branch in {repo} that staging has not had ({newest})"
    for version in _deployed(settings, source, still_good=True):
        # Scheduled promotions move releases, not development builds.
        if is_release(version) and version not in already:
            return version, ""
    return None, f"nothing new to release: no release verified on {source} that {environment} has not had"


def release_tick(settings: Settings, environment: str, at: datetime, *, check_lock: bool = True) -> Tick:
    """The release schedule's tick at local time `at`: deploy a version, or skip with the reason."""
    name = f"{environment}_release_schedule"
    rule = settings.calendar.release(environment)
    if rule is None:
        return Tick(name, environment, at, "", f"{environment} has no release schedule")
    if not rule.runs_on(at.date()):
        return Tick(
            name,
            environment,
            at,
            "",
            f"off week: {environment} releases every {rule.every_weeks} weeks from {rule.anchor}",
        )
    blocked = settings.calendar.blocked(at.date())
    if blocked:
        return Tick(name, environment, at, "", blocked)
    version, why = release_candidate(settings, environment)
    if version is None:
        return Tick(name, environment, at, "", why)
    if (
        environment == PRODUCTION
        and settings.calendar.approval.required
        and valid_approval(settings, environment, version, at) is None
    ):
        return Tick(
            name,
            environment,
            at,
            f"deploy {version}",
            f"awaiting approval of {version} (ultra-ops approve --environment production --tag {version} --by NAME)",
            version,
        )
    if check_lock and environment in settings.environments:
        try:
            holder = lock_holder(settings.environments[environment])
        except OperationError as exc:  # a host that does not answer: its lock cannot be told free
            return Tick(name, environment, at, f"deploy {version}", f"lock unknown: {exc}", version)
        if holder is not None:
            return Tick(
                name,
                environment,
                at,
                f"deploy {version}",
                f"lock held by {describe_holder(holder, settings.timezone)}",
                version,
            )
    return Tick(name, environment, at, f"deploy {version}", version=version)


def _moments(start: datetime, end: datetime, weekday: int | None, hour: int, minute: int) -> list[datetime]:
    """Local wall-clock moments between start and end on `weekday` (None: every day)."""
    out = []
    day: date = start.date()
    while day <= end.date():
        if weekday is None or day.weekday() == weekday:
            moment = datetime(day.year, day.month, day.day, hour, minute, tzinfo=start.tzinfo)
            if start <= moment <= end:
                out.append(moment)
        day += timedelta(days=1)
    return out


def upcoming(settings: Settings, start: datetime, weeks: int, environment: str | None = None) -> list[Tick]:
    """Every release and maintenance tick from `start` for `weeks` weeks, with what it would do."""
    zone = ZoneInfo(settings.timezone)
    start = start.astimezone(zone)
    end = start + timedelta(weeks=weeks)
    ticks: list[Tick] = []
    for env in PROMOTED:
        rule = settings.calendar.release(env)
        if rule is None or env not in settings.environments or environment not in (None, env):
            continue
        for moment in _moments(start, end, rule.weekday, rule.at.hour, rule.at.minute):
            tick = release_tick(settings, env, moment, check_lock=False)
            if tick.skip and tick.skip.startswith("off week"):
                continue  # a weekly cron's off-week ticks: shown nowhere, they never do anything
            ticks.append(tick)
    calendar = settings.calendar
    nightly = calendar.nightly_backup
    # Every environment's maintenance ticks: (schedule, what it does, weekday or None for daily, time).
    maintenance = (
        ("nightly_backup_schedule", "backup", None, nightly),
        ("weekly_vacuum_schedule", "VACUUM ANALYZE", calendar.weekly_vacuum.weekday, calendar.weekly_vacuum.at),
        (
            "weekly_restore_test_schedule",
            "restore test of the newest backup",
            calendar.weekly_restore_test.weekday,
            calendar.weekly_restore_test.at,
        ),
    )
    for env in settings.environments:
        if environment not in (None, env):
            continue
        for name, action, weekday, at in maintenance:
            ticks += [Tick(name, env, m, action) for m in _moments(start, end, weekday, at.hour, at.minute)]
    return sorted(ticks, key=lambda t: (t.at, t.schedule, t.environment))


MAINTENANCE_SCHEDULES = ("nightly_backup_schedule", "weekly_vacuum_schedule", "weekly_restore_test_schedule")
