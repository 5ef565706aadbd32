"""The release calendar: the `[calendar]` table of the config file.

    [calendar]
    staging = { day = "tuesday", time = "10:00" }                 # every week
    production = { day = "thursday", time = "10:00", every_weeks = 2, anchor = "2026-12-03" }
    nightly_backup = { time = "01:30" }                           # local time, never 02:00-03:00
    weekly_vacuum = { day = "sunday", time = "04:00" }
    hourly_cache_check = { minute = 15 }
    health_monitor = { interval_s = 60 }                          # polls /health?detail=true
    weekly_restore_test = { day = "saturday", time = "05:00" }    # each environment's newest backup
    freezes = [{ name = "year-end freeze", start = "2026-12-21", end = "2027-01-04" }]
    holidays = ["2026-12-24"]
    [calendar.automations]                                        # running or stopped at first load
    staging_release_schedule = "running"

Times are local to the config's `timezone`. The anchor is a production release day: production
deploys on it and every `every_weeks` weeks after, counted in days, so year ends, 53-week years
and daylight-saving changes do not shift it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from ultra_ops.engine.settings.table import TableReader

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
AUTOMATIONS = (
    "staging_release_schedule",
    "production_release_schedule",
    "nightly_backup_schedule",
    "weekly_vacuum_schedule",
    "hourly_cache_check_schedule",
    "daily_log_archive_schedule",
    "verify_after_deploy_sensor",
    "failed_verification_sensor",
    "release_notification_sensor",
    "release_failure_sensor",
    "backup_freshness_sensor",
    "weekly_run_purge_schedule",
    "nightly_platform_backup_schedule",
    "health_monitor_sensor",
    "weekly_restore_test_schedule",
    "release_calendar_schedule",
)
_DEFAULT_ANCHOR = date(2026, 1, 8)  # a Thursday


@dataclass(frozen=True)
class Weekly:
    """A weekly (or every-n-weeks) moment in local time."""

    weekday: int  # 0 = Monday
    at: time
    every_weeks: int = 1
    anchor: date | None = None  # a day of `weekday` in a week that runs; required when every_weeks > 1

    def cron(self) -> str:
        return f"{self.at.minute} {self.at.hour} * * {(self.weekday + 1) % 7}"  # cron: 0 = Sunday

    def runs_on(self, day: date) -> bool:
        if day.weekday() != self.weekday:
            return False
        if self.every_weeks == 1 or self.anchor is None:
            return True
        return (day - self.anchor).days % (7 * self.every_weeks) == 0


@dataclass(frozen=True)
class Freeze:
    name: str
    start: date
    end: date  # inclusive

    def covers(self, day: date) -> bool:
        return self.start <= day <= self.end


@dataclass(frozen=True)
class ApprovalSettings:
    """Who must say yes before a scheduled production deploy goes ahead."""

    required: bool = True
    expires_hours: float = 72.0
    author_may_approve: bool = False  # the person who took the release to staging


@dataclass(frozen=True)
class CalendarSettings:
    staging: Weekly = Weekly(1, time(10, 0))
    production: Weekly = Weekly(3, time(10, 0), 2, _DEFAULT_ANCHOR)
    nightly_backup: time = time(1, 30)
    weekly_vacuum: Weekly = Weekly(6, time(4, 0))
    cache_check_minute: int = 15  # past every hour
    freezes: tuple[Freeze, ...] = ()
    holidays: tuple[date, ...] = ()
    running: dict[str, bool] = field(default_factory=dict)  # schedule or sensor name -> starts running
    approval: ApprovalSettings = ApprovalSettings()
    health_monitor_interval_s: int = 60  # how often the health monitor sensor polls /health?detail=true
    weekly_restore_test: Weekly = Weekly(5, time(5, 0))  # the restore test of each newest backup

    def release(self, environment: str) -> Weekly | None:
        return {"staging": self.staging, "production": self.production}.get(environment)

    def blocked(self, day: date) -> str | None:
        """Why nothing is released on `day`, or None."""
        for freeze in self.freezes:
            if freeze.covers(day):
                return f"inside the freeze '{freeze.name}' ({freeze.start} to {freeze.end})"
        if day in self.holidays:
            return f"{day} is a holiday"
        return None


def _date(r: TableReader, name: str, value: Any) -> date:
    # TOML has date literals (2026-12-24) and strings ("2026-12-24"); accept both, nothing else.
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise r.fail(name, f"expected a date YYYY-MM-DD, got {value!r}")


def _time(r: TableReader, name: str, value: Any) -> time:
    if isinstance(value, str):
        try:
            return time.fromisoformat(value)
        except ValueError:
            pass
    raise r.fail(name, f"expected a local time HH:MM, got {value!r}")


def _weekly(r: TableReader | None, default: Weekly) -> Weekly:
    if r is None:
        return default
    day = r.get("day", str, DAYS[default.weekday])
    if day.lower() not in DAYS:
        raise r.fail("day", f"expected a day of the week ({', '.join(DAYS)}), got {day!r}")
    weekday = DAYS.index(day.lower())
    at = _time(r, "time", r.get("time", str, default.at.strftime("%H:%M")))
    every = r.get("every_weeks", int, default.every_weeks)
    if not 1 <= every <= 52:
        raise r.fail("every_weeks", f"expected 1 to 52, got {every}")
    anchor = default.anchor
    if "anchor" in r.table:
        anchor = _date(r, "anchor", r.get("anchor", (str, date)))
    if every > 1:
        if anchor is None:
            raise r.fail("anchor", "is required when every_weeks is more than 1")
        if anchor.weekday() != weekday:
            raise r.fail("anchor", f"{anchor} is a {DAYS[anchor.weekday()]}, not a {DAYS[weekday]}")
    r.finish()
    return Weekly(weekday, at, every, anchor)


def _whole_number(r: TableReader | None, name: str, default: int, low: int, high: int, unit: str = "") -> int:
    """The one key of a small table such as `{ minute = 15 }`, from `low` to `high`."""
    if r is None:
        return default
    value = r.get(name, int, default)
    if not low <= value <= high:
        raise r.fail(name, f"expected {low} to {high}{unit}, got {value}")
    r.finish()
    return value


def read_calendar(r: TableReader | None) -> CalendarSettings:
    """The `[calendar]` table, checked whole; defaults where it is silent."""
    if r is None:
        return CalendarSettings()
    defaults = CalendarSettings()
    staging = _weekly(r.sub("staging"), defaults.staging)
    production = _weekly(r.sub("production"), defaults.production)
    backup = r.sub("nightly_backup")
    nightly = defaults.nightly_backup
    if backup is not None:
        nightly = _time(backup, "time", backup.get("time", str, nightly.strftime("%H:%M")))
        # Local times between 02:00 and 03:00 happen twice or never on daylight-saving days.
        if time(2, 0) <= nightly < time(3, 0):
            raise backup.fail(
                "time",
                f"{nightly:%H:%M} is inside 02:00-03:00, which daylight saving skips or repeats; choose another time",
            )
        backup.finish()
    vacuum = _weekly(r.sub("weekly_vacuum"), defaults.weekly_vacuum)
    if time(2, 0) <= vacuum.at < time(3, 0):
        raise r.fail("weekly_vacuum", "its time is inside 02:00-03:00, which daylight saving skips or repeats")
    restore_test = _weekly(r.sub("weekly_restore_test"), defaults.weekly_restore_test)
    if time(2, 0) <= restore_test.at < time(3, 0):
        raise r.fail("weekly_restore_test", "its time is inside 02:00-03:00, which daylight saving skips or repeats")
    minute = _whole_number(r.sub("hourly_cache_check"), "minute", defaults.cache_check_minute, 0, 59)
    interval = _whole_number(
        r.sub("health_monitor"), "interval_s", defaults.health_monitor_interval_s, 30, 86400, " seconds"
    )
    freezes = []
    for i, f in enumerate(r.tables("freezes", "expected a table with name, start and end")):
        start = _date(f, "start", f.get("start", (str, date), required=True))
        end = _date(f, "end", f.get("end", (str, date), required=True))
        if end < start:
            raise f.fail("end", f"{end} is before start {start}")
        freezes.append(Freeze(f.get("name", str, f"freeze {i + 1}"), start, end))
        f.finish()
    holidays = tuple(_date(r, f"holidays[{i}]", v) for i, v in enumerate(r.get("holidays", list, [])))
    running: dict[str, bool] = {}
    states = r.sub("automations")
    if states is not None:
        for name in list(states.table):
            if name not in AUTOMATIONS:
                raise states.fail(name, f"unknown schedule or sensor; expected one of {', '.join(AUTOMATIONS)}")
            state = states.get(name, str)
            if state not in ("running", "stopped"):
                raise states.fail(name, f"expected 'running' or 'stopped', got {state!r}")
            running[name] = state == "running"
        states.finish()
    approval = ApprovalSettings()
    a = r.sub("approval")
    if a is not None:
        hours = float(a.positive("expires_hours", approval.expires_hours, at_most=24 * 366, unit=" hours"))
        if not 0 < hours < 24 * 366:
            raise a.fail("expires_hours", f"expected more than 0 and less than a year, got {hours:g}")
        approval = ApprovalSettings(a.get("required", bool, True), hours, a.get("author_may_approve", bool, False))
        a.finish()
    r.finish()
    return CalendarSettings(
        staging,
        production,
        nightly,
        vacuum,
        minute,
        tuple(freezes),
        holidays,
        running,
        approval,
        interval,
        restore_test,
    )
