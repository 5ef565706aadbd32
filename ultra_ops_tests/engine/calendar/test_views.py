"""What waits for a person, and the coming ticks, as the UI shows them: each pending decision with
its command, job and run config; the calendar in the config's time zone with production's off
weeks left out; the schedules' descriptions say which Thursdays."""

from __future__ import annotations

import textwrap
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ultra_ops.engine.calendar.approvals import approve
from ultra_ops.engine.calendar.views import calendar_markdown, pending_decisions, pending_table
from ultra_ops.engine.settings import load_settings
from ultra_ops.engine.verify.decisions import ask, decide
from ultra_ops_tests.support.configs import write_multi_config
from ultra_ops_tests.support.releases import record_deployed

pytestmark = pytest.mark.unit
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    # Names only: nothing here connects to a database.
    path = write_multi_config(tmp_path, {"staging": "uo_unused_s", "production": "uo_unused_p"}, redis_prefix="x:")
    calendar = """
        timezone = "Europe/Berlin"

        [calendar]
        production = { day = "thursday", time = "10:00", every_weeks = 2, anchor = 2027-03-11 }
        weekly_restore_test = { day = "saturday", time = "05:00" }
    """
    path.write_text(path.read_text().replace('timezone = "UTC"\n', textwrap.dedent(calendar), 1))
    return path


def test_pending_decisions_name_the_command_job_and_config(config: Path) -> None:
    settings = load_settings(config)
    monday = datetime(2027, 3, 8, 9, tzinfo=BERLIN)  # production's tick is on Thursday the 11th
    assert pending_decisions(settings, monday) == []
    assert pending_table([]) == "Nothing waits for a decision."

    staging = settings.environments["staging"]
    ask(staging, "req-1", version="v1.4.0", run_id="run-9", summary="window inconclusive: 1 of 3 samples failed")
    record_deployed(staging, "v1.4.0")
    decision, approval = pending_decisions(settings, monday)
    assert (decision.kind, decision.environment, decision.version) == ("verification decision", "staging", "v1.4.0")
    assert decision.command == (
        "ultra-ops verify --environment staging --decide approve|rollback --by NAME --request req-1"
    )
    assert decision.job == "verification_decision_job" and decision.partition is None
    assert decision.run_config["ops"]["decide_verification"]["config"] == {
        "environment": "staging",
        "decision": "approve",
        "by": "NAME",
        "request_id": "req-1",
    }
    assert decision.since.endswith(("CET", "CEST"))  # the config's zone, not UTC

    assert (approval.kind, approval.environment, approval.version) == ("production approval", "production", "v1.4.0")
    assert approval.since == "2027-03-11 10:00:00 CET"
    assert approval.command == "ultra-ops approve --environment production --tag v1.4.0 --by NAME"
    assert (approval.job, approval.partition) == ("approve_job", "production")
    assert approval.run_config == {"ops": {"approve_release": {"config": {"tag": "v1.4.0", "by": "NAME"}}}}
    assert "`ultra-ops approve --environment production --tag v1.4.0 --by NAME` or approve_job" in pending_table(
        [decision, approval]
    )

    # Answered: neither waits any more.
    decide(staging, "approve", by="bob", request_id="req-1")
    approve(settings, "production", "v1.4.0", "bob", now=datetime(2027, 3, 11, 8, tzinfo=BERLIN))  # valid at 10:00
    assert pending_decisions(settings, monday) == []


def test_calendar_lists_the_coming_ticks_in_the_config_zone(config: Path) -> None:
    settings = load_settings(config)
    text = calendar_markdown(settings, datetime(2027, 3, 8, 9, tzinfo=BERLIN), release_weeks=4, maintenance_days=7)
    releases, maintenance = text.split("### Maintenance ticks")
    production = [line for line in releases.splitlines() if "production_release_schedule" in line]
    # Every other Thursday: the 11th and the 25th, never the off week's 18th.
    assert [line.split(" | ")[0] for line in production] == ["Thu 2027-03-11 10:00 CET", "Thu 2027-03-25 10:00 CET"]
    assert "nothing new to release" in production[0]
    assert "Sat 2027-03-13 05:00 CET | weekly_restore_test_schedule | staging" in maintenance
    assert "nightly_backup_schedule" in maintenance and "UTC" not in text


def test_schedule_descriptions_say_which_thursdays(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ULTRA_OPS_CONFIG", str(config))
    from ultra_ops.defs.calendar.schedules import calendar_schedules

    schedules = {s.name: s for s in calendar_schedules()}
    production = schedules["production_release_schedule"].description
    assert production.startswith("Every other Thursday (every 2 weeks from 2027-03-11;")
    assert "10:00 Europe/Berlin" in production and "pending_decisions" in production
    assert schedules["staging_release_schedule"].description.startswith("Every Tuesday at 10:00 Europe/Berlin")
