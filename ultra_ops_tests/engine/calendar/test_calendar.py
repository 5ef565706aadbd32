"""The release calendar: schedule ticks over three years, freezes and holidays, the promotion gate
and emergency fixes."""

from __future__ import annotations

import textwrap
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from dagster import DagsterInstance, RunRequest, build_schedule_context
from dagster._utils.schedules import cron_string_iterator

from ultra_ops.cli import main
from ultra_ops.engine.calendar.approvals import approve, valid_approval
from ultra_ops.engine.calendar.ticks import release_tick, upcoming
from ultra_ops.engine.errors import InputError
from ultra_ops.engine.release.records import find_releases
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.configs import write_multi_config
from ultra_ops_tests.support.releases import record_deployed

BERLIN = ZoneInfo("Europe/Berlin")
CALENDAR = """
timezone = "Europe/Berlin"

[calendar]
staging = { day = "tuesday", time = "10:00" }
production = { day = "thursday", time = "10:00", every_weeks = 2, anchor = 2026-01-01 }
nightly_backup = { time = "01:30" }
holidays = [2027-05-20]
freezes = [{ name = "year-end freeze", start = 2026-12-21, end = 2027-01-04 }]
"""


def _config(tmp_path: Path, databases: dict[str, str], redis_prefix: str) -> Path:
    path = write_multi_config(tmp_path, databases, redis_prefix=redis_prefix)
    text = path.read_text().replace('timezone = "UTC"\n', textwrap.dedent(CALENDAR), 1)
    path.write_text(text)
    return path


_deployed = record_deployed


def _fire_times(schedule, start: datetime, end: datetime) -> list[datetime]:
    out = []
    for moment in cron_string_iterator(start.timestamp(), schedule.cron_schedule, schedule.execution_timezone):
        if moment > end:
            return out
        out.append(moment)
    return out


def test_ticks_from_2026_to_2028(
    tmp_path: Path, pg_databases: dict[str, str], redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every day of 2026-2028: staging on Tuesdays, production every second Thursday from the anchor
    (across the 53-week 2026 and every daylight-saving change), all at 10:00 Berlin time."""
    config = _config(tmp_path, pg_databases, redis_prefix)
    monkeypatch.setenv("ULTRA_OPS_CONFIG", str(config))
    from ultra_ops.defs.backups.schedules import backup_schedules
    from ultra_ops.defs.calendar.schedules import calendar_schedules

    settings = load_settings(config)
    schedules = {s.name: s for s in [*calendar_schedules(), *backup_schedules()]}
    start, end = datetime(2026, 1, 1, tzinfo=BERLIN), datetime(2028, 12, 31, 23, 59, tzinfo=BERLIN)
    staging = _fire_times(schedules["staging_release_schedule"], start, end)
    assert {m.weekday() for m in staging} == {1} and {(m.hour, m.minute) for m in staging} == {(10, 0)}
    every_tuesday = [start.date() + timedelta(days=i) for i in range((end.date() - start.date()).days + 1)]
    assert [m.date() for m in staging] == [d for d in every_tuesday if d.weekday() == 1]

    thursdays = _fire_times(schedules["production_release_schedule"], start, end)
    releasing = [
        m
        for m in thursdays
        if not (release_tick(settings, "production", m, check_lock=False).skip or "").startswith("off week")
    ]
    assert {(m.hour, m.minute) for m in releasing} == {(10, 0)}
    fortnights = [date(2026, 1, 1) + timedelta(days=14 * k) for k in range(80)]
    assert [m.date() for m in releasing] == [d for d in fortnights if d <= end.date()]
    assert len(thursdays) == 157 and len(releasing) == 79
    # ISO weeks 53 and 1, both odd: ISO-week parity would deploy on both; counting days, on one.
    assert date(2026, 12, 31) in {m.date() for m in releasing}
    assert date(2027, 1, 7) not in {m.date() for m in releasing}
    nightly = _fire_times(schedules["nightly_backup_schedule"], start, end)
    assert len(nightly) == (end.date() - start.date()).days + 1
    assert {(m.hour, m.minute) for m in nightly} == {(1, 30)}


def test_ticks_deploy_what_is_verified_below_and_skip_saying_why(
    tmp_path: Path, pg_databases: dict[str, str], redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, pg_databases, redis_prefix)
    monkeypatch.setenv("ULTRA_OPS_CONFIG", str(config))
    from ultra_ops.definitions import defs
    from ultra_ops.defs.calendar.schedules import calendar_schedules

    settings = load_settings(config)
    schedules = {s.name: s for s in calendar_schedules()}
    tuesday = datetime(2027, 3, 9, 10, tzinfo=BERLIN)

    def evaluate(name: str, when: datetime):
        with DagsterInstance.ephemeral() as instance:
            context = build_schedule_context(
                instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
            )
            result = schedules[name].evaluate_tick(context)
        return result.run_requests or [], result.skip_message

    requests, skipped = evaluate("staging_release_schedule", tuesday)
    assert not requests and "nothing new to release" in skipped
    _deployed(settings.environments["development"], "v0.0.0-dev.20270301120000")  # a dev build: not a release
    _deployed(settings.environments["development"], "v1.4.0")
    (request,), _ = evaluate("staging_release_schedule", tuesday)
    assert isinstance(request, RunRequest) and request.partition_key == "staging"
    assert request.run_config["ops"]["deploy_plan"]["config"]["tag"] == "v1.4.0"
    assert request.tags["ultra_ops/environment"] == "staging" and request.tags["ultra_ops/version"] == "v1.4.0"

    # Production takes only what staging verified, on its own weeks, never in a freeze or on a holiday.
    thursday = datetime(2027, 3, 11, 10, tzinfo=BERLIN)
    assert (thursday.date() - date(2026, 1, 1)).days % 14 == 0
    _, skipped = evaluate("production_release_schedule", thursday)
    assert "no release verified on staging" in skipped
    _deployed(settings.environments["staging"], "v1.4.0", by="alice")
    _, skipped = evaluate("production_release_schedule", thursday)
    assert skipped.startswith("awaiting approval of v1.4.0")
    with pytest.raises(InputError, match="alice took v1.4.0 to staging and may not approve it"):
        approve(settings, "production", "v1.4.0", "alice")
    approve(settings, "production", "v1.4.0", "bob", now=thursday - timedelta(hours=80))  # expired by then
    _, skipped = evaluate("production_release_schedule", thursday)
    assert skipped.startswith("awaiting approval of v1.4.0")
    approve(settings, "production", "v1.4.0", "bob", now=thursday - timedelta(hours=1))
    (request,), _ = evaluate("production_release_schedule", thursday)
    assert request.run_config["ops"]["deploy_plan"]["config"]["tag"] == "v1.4.0"
    _, skipped = evaluate("production_release_schedule", thursday + timedelta(days=7))
    assert skipped.startswith("off week")
    _, skipped = evaluate("production_release_schedule", datetime(2026, 12, 31, 10, tzinfo=BERLIN))
    assert "year-end freeze" in skipped
    _, skipped = evaluate("production_release_schedule", datetime(2027, 5, 20, 10, tzinfo=BERLIN))
    assert "2027-05-20 is a holiday" in skipped

    ticks = [
        t
        for t in upcoming(settings, datetime(2026, 12, 14, tzinfo=BERLIN), 4, "production")
        if t.schedule == "production_release_schedule"
    ]
    assert [t.at.date() for t in ticks] == [date(2026, 12, 17), date(2026, 12, 31)]
    assert ticks[0].action == "deploy v1.4.0" and ticks[0].skip.startswith("awaiting approval")
    assert "year-end freeze" in ticks[1].skip


def test_production_refuses_what_staging_did_not_verify_unless_emergency(
    tmp_path: Path, pg_databases: dict[str, str], redis_prefix: str, dagster_home: Path, capsys
) -> None:
    config = _config(tmp_path, {env: pg_databases[env] for env in ("staging", "production")}, redis_prefix)
    argv = ["--environment", "production", "--config", str(config)]
    assert main(["init", *argv]) == 0
    try:
        capsys.readouterr()
        assert main(["deploy", *argv, "--tag", "v2.0.0"]) == 1
        assert "v2.0.0 has no successful, verified deploy on staging" in capsys.readouterr().err
        assert main(["deploy", *argv, "--tag", "v2.0.0", "--emergency"]) == 2
        assert "needs --reason" in capsys.readouterr().err
        assert main(["deploy", *argv, "--tag", "v2.0.0", "--emergency", "--reason", "CVE-2026-1234 fix"]) == 0
        assert main(["approve", *argv, "--tag", "v2.0.0", "--by", "carol"]) == 0
        approval = valid_approval(load_settings(config), "production", "v2.0.0", datetime.now(BERLIN))
        assert approval.approved_by == "carol"
        assert main(["approve", *argv, "--tag", "v2.0.0", "--by", "carol; rm -rf /"]) == 2
    finally:
        main(["stop", *argv])
    env = load_settings(config).environments["production"]
    (record,) = find_releases(env)
    assert record.status == "deployed" and record.reason == "emergency: CVE-2026-1234 fix"
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        run = instance.get_run_by_id(record.run_id)
        assert run.tags["ultra_ops/emergency"] == "true"
        assert run.run_config["ops"]["deploy_plan"]["config"]["reason"] == "CVE-2026-1234 fix"


@pytest.mark.unit
def test_bad_calendar_config_names_the_key(tmp_path: Path) -> None:
    from ultra_ops.engine.errors import ConfigError

    base = write_multi_config(tmp_path, {"staging": "x"}, redis_prefix="p:").read_text()
    for bad, key in [
        ('production = { day = "thursday", every_weeks = 2, anchor = 2026-01-07 }', "calendar.production.anchor"),
        ('production = { day = "thursday", every_weeks = 2, anchor = "soon" }', "calendar.production.anchor"),
        ('nightly_backup = { time = "02:30" }', "calendar.nightly_backup.time"),
        ('staging = { day = "funday" }', "calendar.staging.day"),
        ("holidays = [5]", "calendar.holidays[0]"),
        ('freezes = [{ name = "x", start = 2026-02-01, end = 2026-01-01 }]', "calendar.freezes[0].end"),
    ]:
        (tmp_path / "bad.toml").write_text(base.replace('timezone = "UTC"\n', f'timezone = "UTC"\n[calendar]\n{bad}\n'))
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            load_settings(tmp_path / "bad.toml")


def test_maintenance_ticks_start_one_run_per_environment(
    tmp_path: Path, pg_databases: dict[str, str], redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, pg_databases, redis_prefix)
    monkeypatch.setenv("ULTRA_OPS_CONFIG", str(config))
    from ultra_ops.definitions import defs
    from ultra_ops.defs.maintenance.schedules import maintenance_schedules

    schedules = {s.name: s for s in maintenance_schedules()}
    after_midnight = datetime(2026, 11, 27, 0, 30, tzinfo=BERLIN)
    with DagsterInstance.ephemeral() as instance:
        context = build_schedule_context(
            instance=instance, scheduled_execution_time=after_midnight, repository_def=defs.get_repository_def()
        )
        requests = schedules["daily_log_archive_schedule"].evaluate_tick(context).run_requests
    assert sorted(str(r.partition_key) for r in requests) == [
        "2026-11-26|development",
        "2026-11-26|production",
        "2026-11-26|staging",
    ]
    assert {r.run_key for r in requests} == {f"daily_log_archive_schedule:{e}:2026-11-26" for e in pg_databases}
    assert {r.tags["ultra_ops/environment"] for r in requests} == set(pg_databases)
    sunday = _fire_times(
        schedules["weekly_vacuum_schedule"], datetime(2026, 3, 1, tzinfo=BERLIN), datetime(2026, 4, 30, tzinfo=BERLIN)
    )
    assert {m.weekday() for m in sunday} == {6} and {(m.hour, m.minute) for m in sunday} == {(4, 0)}


@pytest.mark.unit
def test_an_approval_counts_from_a_coming_tick_but_no_later_than_the_second(tmp_path: Path, capsys) -> None:
    from ultra_ops.engine.calendar.approvals import production_ticks

    config = write_multi_config(tmp_path, {"staging": "unused_s", "production": "unused_p"}, redis_prefix="p:")
    settings = load_settings(config)
    now = datetime(2026, 11, 27, 12, tzinfo=BERLIN)
    first, second = production_ticks(settings, now, 2)
    assert (first.date(), second.date()) == (date(2026, 12, 10), date(2026, 12, 24))  # anchor 2026-01-08 + 14 k
    approve(settings, "production", "v1.0.0", "bob", now=now, valid_from=first - timedelta(hours=1))
    assert valid_approval(settings, "production", "v1.0.0", now) is None  # not yet
    assert valid_approval(settings, "production", "v1.0.0", first).approved_by == "bob"
    assert valid_approval(settings, "production", "v1.0.0", first + timedelta(hours=72)) is None  # expired
    for bad, why in (
        (second + timedelta(minutes=1), "second coming production tick"),
        (now - timedelta(hours=1), "second coming production tick"),
        (datetime(2026, 12, 3, 9), "needs a time zone"),
    ):
        with pytest.raises(InputError, match=why):
            approve(settings, "production", "v1.0.1", "bob", now=now, valid_from=bad)
    assert valid_approval(settings, "production", "v1.0.1", first) is None  # nothing half written
    assert (
        main(
            [
                "approve",
                "--environment",
                "production",
                "--tag",
                "v1.0.1",
                "--by",
                "bob",
                "--at",
                "soon",
                "--config",
                str(config),
            ]
        )
        == 2
    )
    assert "is not an ISO time" in capsys.readouterr().err
