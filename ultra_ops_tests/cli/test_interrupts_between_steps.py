"""Runs stopped where no step can catch it (issue 17): killed between taking the lock and their
first recorded step, or interrupted between two Dagster steps. The lock's marker carries the
release record from the moment the lock is taken, so a killed run is recorded `interrupted` by the
next operation; an interrupt is settled as the run lets go of the lock, and the CLI's one error
says what state the environment is in and what to run. Real PostgreSQL and services; the runs are
`python -m ultra_ops.cli` subprocesses, killed or interrupted at a named point (crash_points.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from ultra_ops.engine.backups.store import list_backups
from ultra_ops.engine.crash_points import CRASH_ENV, PAUSE_ENV
from ultra_ops.engine.release.interrupts import interrupted_state
from ultra_ops.engine.release.records import ReleaseRecord, find_releases, record_release
from ultra_ops.engine.runs import marker_path
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.cli import start_cli, wait_for_pause
from ultra_ops_tests.support.configs import checks_config
from ultra_ops_tests.support.stack import Stack


def _cli(stack: Stack, *argv: str, extra_env: dict[str, str]) -> subprocess.Popen:
    return start_cli(*argv, config=stack.config, environment="staging", env={**os.environ, **extra_env})


def _killed_at(stack: Stack, point: str, *argv: str) -> str:
    """Run `ultra-ops ARGV`, killed (SIGKILL) at `point`: the id of the run its marker names."""
    proc = _cli(stack, *argv, extra_env={CRASH_ENV: point})
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == -signal.SIGKILL, err
    return json.loads(marker_path(stack.env).read_text())["run_id"]


def test_runs_killed_before_their_first_step_are_recorded_by_the_next_operation(stack: Stack, capsys) -> None:
    """A rollback killed the moment it took the lock (inside rollback_plan, before its check), and a
    deploy killed between deploy_plan and deploy_checklist: each is recorded once, `interrupted`,
    naming its version and run, by the operation that takes the lock next."""
    assert stack.ops("deploy", "--tag", "v1.0.0", "--skip-tests") == 0
    assert stack.ops("backups", "create") == 0
    backup_id = list_backups(stack.env)[0].id

    rollback_run = _killed_at(stack, "locked", "rollback", "--backup", backup_id, "--yes")
    assert find_releases(stack.env, run_id=rollback_run) == []  # nothing recorded by the killed run itself
    deploy_run = _killed_at(stack, "step:deploy_checklist", "deploy", "--tag", "v1.1.0", "--skip-tests")
    # The deploy's recovery, as it took the lock, recorded the rollback.
    (rolled,) = find_releases(stack.env, run_id=rollback_run)
    assert (rolled.operation, rolled.version, rolled.previous_version, rolled.backup_id, rolled.status) == (
        "rollback",
        "v1.0.0",
        "v1.0.0",
        backup_id,
        "interrupted",
    )
    assert "ended without finishing: its process, pid" in rolled.reason, rolled.reason
    assert find_releases(stack.env, run_id=deploy_run) == []

    capsys.readouterr()
    assert stack.ops("recover") == 0
    assert f"recorded deploy run {deploy_run} as interrupted" in capsys.readouterr().out
    (deployed,) = find_releases(stack.env, run_id=deploy_run)
    assert (deployed.operation, deployed.version, deployed.previous_version, deployed.status) == (
        "deploy",
        "v1.1.0",
        "v1.0.0",
        "interrupted",
    )
    assert deployed.launched_by and deployed.started_at
    assert stack.ops("recover") == 0  # found once: not recorded again
    assert [len(find_releases(stack.env, run_id=r)) for r in (rollback_run, deploy_run)] == [1, 1]

    capsys.readouterr()
    assert stack.ops("releases") == 0
    rows = capsys.readouterr().out.splitlines()
    # STARTED is the config's local time, three words (date, time, zone): the columns follow.
    assert any(
        row.split()[3:7] == ["deploy", "v1.1.0", "v1.0.0", "interrupted"] and deploy_run[:8] in row for row in rows
    ), rows
    assert any(
        row.split()[3:7] == ["rollback", "v1.0.0", "v1.0.0", "interrupted"] and rollback_run[:8] in row for row in rows
    ), rows
    assert stack.get("/health").json()["version"] == "v1.0.0"  # neither got as far as changing anything


@pytest.mark.parametrize("signo", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_between_two_steps_ends_with_the_state_it_left(stack: Stack, signo: int, capsys) -> None:
    """Ctrl-C or SIGTERM while Dagster goes from deploy_plan to deploy_checklist (it holds the
    signal back to the next step's start, outside every step's own handler): the run's end
    settles and records it, and the CLI's last line is the one message saying what runs and what
    to run, not the interrupt's bare type name."""
    assert stack.ops("deploy", "--tag", "v1.0.0", "--skip-tests") == 0
    reached = stack.tmp / "reached"
    proc = _cli(
        stack, "deploy", "--tag", "v1.1.0", "--skip-tests", extra_env={PAUSE_ENV: f"step:deploy_checklist={reached}"}
    )
    try:
        wait_for_pause(proc, reached, "its checklist")
        proc.send_signal(signo)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    assert "DagsterExecutionInterruptedError" not in err, err
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [err.splitlines()[-1]], err
    assert err.splitlines()[-1] == (
        "error: deploy of v1.1.0 to staging was interrupted (Ctrl-C or SIGTERM); staging runs v1.0.0 "
        "(backend): check it with `ultra-ops verify --environment staging`"
    ), err

    (record,) = find_releases(stack.env, status="interrupted")
    assert (record.operation, record.version, record.previous_version) == ("deploy", "v1.1.0", "v1.0.0")
    assert record.reason == err.splitlines()[-1].removeprefix("error: ")
    assert stack.get("/health").json()["version"] == "v1.0.0"
    assert not marker_path(stack.env).exists()  # nothing left to settle: it runs as before
    capsys.readouterr()
    assert stack.ops("status") == 0
    out = capsys.readouterr().out
    assert "version      v1.0.0" in out and "last release deploy v1.1.0 interrupted" in out, out
    assert "lock         free" in out and "pending" not in out, out
    assert "service      backend          running" in out, out


@pytest.mark.unit
def test_the_message_of_an_interrupted_run_without_a_record_says_where_to_look(tmp_path: Path) -> None:
    """A run that leaves no record (a backup, or a record it could not write) still ends with what
    to run, never the interrupt's type name; one that was recorded ends with its record's reason."""
    env = load_settings(checks_config(tmp_path, "unused", "")).environment("staging")
    message = interrupted_state(env, "run-1")
    assert message == (
        "run run-1 on staging was interrupted (Ctrl-C or SIGTERM); `ultra-ops status --environment staging` "
        "shows the state it left, and `ultra-ops recover --environment staging` settles what it left unfinished"
    )
    stamp = "2026-01-02T00:00:00Z"
    fields = dict(environment="staging", operation="deploy", version="v1.1.0", previous_version="v1.0.0")
    record_release(env, ReleaseRecord(**fields, status="failed", run_id="run-2", started_at=stamp, ended_at=stamp))
    assert interrupted_state(env, "run-2").startswith("run run-2 on staging was interrupted")
    reason = "deploy of v1.1.0 to staging was interrupted (Ctrl-C or SIGTERM); staging runs v1.0.0 (backend)"
    record_release(
        env,
        ReleaseRecord(**fields, status="interrupted", run_id="run-1", started_at=stamp, ended_at=stamp, reason=reason),
    )
    assert interrupted_state(env, "run-1") == reason
