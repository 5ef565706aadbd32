"""Interrupted and killed rollbacks (issue 17): an environment killed half stopped is put back by
`recover` or by the next deploy, an interrupt while the services start finishes the swap and says
what state it left, every such run leaves a release record, `status` tells the truth, and `recover`
fails when it could not look. Real PostgreSQL and services; rollbacks run as `python -m
ultra_ops.cli` subprocesses where they are killed or interrupted, and the test waits on a file the
process writes at the point (crash_points.py), not on a sleep."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from ultra_ops.engine.backups.store import list_backups
from ultra_ops.engine.backups.swap import journal_path
from ultra_ops.engine.crash_points import CRASH_ENV, PAUSE_ENV
from ultra_ops.engine.release.records import ReleaseRecord, ReleaseStatus, find_releases, record_release
from ultra_ops.engine.runs import marker_path
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.cli import start_cli, wait_for_pause
from ultra_ops_tests.support.configs import checks_config
from ultra_ops_tests.support.ports import free_port
from ultra_ops_tests.support.services import PG
from ultra_ops_tests.support.stack import Stack


def _with_llm(stack: Stack) -> int:
    """A second service after the backend, as the shipped config has: the LLM stand-in."""
    port = free_port()
    with stack.config.open("a") as f:
        f.write(
            f"""
[environments.staging.processes.llm]
command = ["{sys.executable}", "-m", "ultra_ops.sample_service.llm_standin", "--port", "{port}"]
port = {port}
health_url = "http://127.0.0.1:{port}/v1/models"
"""
        )
    stack.env = load_settings(stack.config).environment("staging")
    return port


def _running(stack: Stack) -> dict[str, bool]:
    return {s.name: s.running for s in get_runtime(stack.env).status()}


def _leftover_databases(database: str) -> list[tuple[str, bool]]:
    with psycopg.connect(**PG, dbname="postgres", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname, datallowconn FROM pg_database WHERE datname LIKE %s",
            (database.replace("_", "\\_") + "\\_\\_%",),
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def _cli(stack: Stack, *argv: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    return start_cli(*argv, config=stack.config, environment="staging", env={**os.environ, **(extra_env or {})})


def _two_releases(stack: Stack) -> str:
    """v1.0.0 deployed and backed up, then v1.1.0 deployed over it: the backup's id."""
    assert stack.ops("deploy", "--tag", "v1.0.0", "--skip-tests") == 0
    assert stack.ops("backups", "create") == 0
    backup_id = list_backups(stack.env)[0].id
    assert stack.ops("deploy", "--tag", "v1.1.0", "--skip-tests") == 0
    assert stack.get("/health").json()["version"] == "v1.1.0"
    return backup_id


@pytest.mark.parametrize("then", ["recover", "deploy"])
def test_killed_half_stopped_then_recover_or_deploy(stack: Stack, then: str, capsys) -> None:
    """kill -9 after the backend stopped and before the LLM stand-in did: `recover` undoes the swap
    and starts both again, and a deploy is not refused by its own checklist meanwhile."""
    _with_llm(stack)
    backup_id = _two_releases(stack)
    proc = _cli(stack, "rollback", "--backup", backup_id, "--yes", extra_env={CRASH_ENV: "stopped:backend"})
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == -signal.SIGKILL, err
    assert _running(stack) == {"backend": False, "llm": True}  # half stopped
    assert json.loads(journal_path(stack.env).read_text())["phase"] == "prepared"
    killed_run = json.loads(marker_path(stack.env).read_text())["run_id"]

    capsys.readouterr()
    if then == "recover":
        assert stack.ops("recover") == 0
        out = capsys.readouterr().out
        assert f"undid the swap of backup {backup_id} (interrupted at prepared)" in out, out
        assert "started staging's services (backend, llm) at v1.1.0: backend, llm ran before" in out, out
        assert f"recorded rollback run {killed_run} as interrupted" in out, out
    else:
        assert stack.ops("deploy", "--tag", "v1.1.1", "--skip-tests") == 0, capsys.readouterr().err
        err = capsys.readouterr().err
        assert "[WARN] health endpoints answer: not checked: staging's services are not all running" in err, err
    assert _running(stack) == {"backend": True, "llm": True}
    assert stack.get("/health").json()["version"] == ("v1.1.0" if then == "recover" else "v1.1.1")
    assert not journal_path(stack.env).exists() and _leftover_databases(stack.database) == []
    killed = find_releases(stack.env, run_id=killed_run)
    assert [(r.operation, r.status) for r in killed] == [("rollback", "interrupted")]
    assert "ended without finishing: its process, pid" in killed[0].reason, killed[0].reason
    assert "undid the swap" in killed[0].reason
    assert (killed[0].version, killed[0].backup_id) == ("v1.0.0", backup_id)
    if then == "recover":
        assert not marker_path(stack.env).exists()
        assert stack.ops("recover") == 0  # nothing left to do, and the record is not written twice
        assert "nothing to recover; all services running" in capsys.readouterr().out
        assert len(find_releases(stack.env, run_id=killed_run)) == 1


def test_killed_deploy_is_recorded_by_the_next_operation(stack: Stack, capsys) -> None:
    """A deploy killed while it restarts the services: the next operation (a backup) records it
    `interrupted`, the services to put back are carried through that backup, and `recover` starts
    them at the version in place."""
    _with_llm(stack)
    assert stack.ops("deploy", "--tag", "v1.0.0", "--skip-tests") == 0
    proc = _cli(stack, "deploy", "--tag", "v1.1.0", "--skip-tests", extra_env={CRASH_ENV: "stopped:backend"})
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == -signal.SIGKILL, err
    assert find_releases(stack.env)[0].version == "v1.0.0"  # nothing recorded by the killed run
    capsys.readouterr()
    assert stack.ops("backups", "create") == 0
    assert "recorded deploy run" in capsys.readouterr().err
    record = find_releases(stack.env)[0]
    assert (record.operation, record.version, record.previous_version, record.status) == (
        "deploy",
        "v1.1.0",
        "v1.0.0",
        "interrupted",
    )
    assert stack.ops("status") == 0
    out = capsys.readouterr().out
    assert "last release deploy v1.1.0 interrupted" in out, out
    assert "services to put back after a run that did not finish: backend, llm" in out, out
    assert stack.ops("recover") == 0
    assert "started staging's services (backend, llm) at v1.1.0: backend, llm ran before" in capsys.readouterr().out
    assert _running(stack) == {"backend": True, "llm": True}
    assert not marker_path(stack.env).exists()


@pytest.mark.parametrize("signo", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_while_the_rollback_starts_the_services(stack: Stack, signo: int, capsys) -> None:
    """Ctrl-C or SIGTERM after the backend started and before the LLM stand-in did: the swap is
    finished before the process exits, nothing is left half up, one message says so and what to
    run, the record says `interrupted`, and `status` and `recover` follow from there."""
    _with_llm(stack)
    backup_id = _two_releases(stack)
    reached = stack.tmp / "reached"
    proc = _cli(stack, "rollback", "--backup", backup_id, "--yes", extra_env={PAUSE_ENV: f"started:backend={reached}"})
    try:
        wait_for_pause(proc, reached, "the start of its services")
        assert _running(stack)["backend"] and not _running(stack)["llm"]
        proc.send_signal(signo)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    message = errors[0]
    assert "DagsterExecutionInterruptedError" not in message
    assert f"rollback of staging to backup {backup_id} was interrupted (Ctrl-C or SIGTERM)" in message, message
    assert f"finished the swap of backup {backup_id} (interrupted at drop_old)" in message, message
    assert "staging is STOPPED at v1.0.0: `ultra-ops recover --environment staging` starts backend, llm" in message
    # Finished before the process exited: no journal, no old database refusing connections.
    assert not journal_path(stack.env).exists() and _leftover_databases(stack.database) == []
    assert _running(stack) == {"backend": False, "llm": False}
    record = find_releases(stack.env)[0]
    assert (record.operation, record.version, record.status) == ("rollback", "v1.0.0", "interrupted")
    assert record.previous_version == "v1.1.0" and "STOPPED" in record.reason

    capsys.readouterr()
    assert stack.ops("status") == 0
    out = capsys.readouterr().out
    assert "version      v1.0.0" in out and "last release rollback v1.0.0 interrupted" in out, out
    assert "ended without finishing; services running before it: backend, llm" in out, out

    assert stack.ops("recover") == 0
    out = capsys.readouterr().out
    assert "started staging's services (backend, llm) at v1.0.0" in out, out
    assert stack.get("/health").json()["version"] == "v1.0.0"
    assert len(find_releases(stack.env, run_id=record.run_id)) == 1  # recorded once, at the interrupt
    assert stack.ops("status") == 0
    assert "pending" not in capsys.readouterr().out


def test_status_shows_a_pending_swap(stack: Stack, capsys) -> None:
    assert stack.ops("deploy", "--tag", "v1.0.0", "--skip-tests") == 0
    assert stack.ops("backups", "create") == 0
    backup_id = list_backups(stack.env)[0].id
    proc = _cli(stack, "rollback", "--backup", backup_id, "--yes", extra_env={CRASH_ENV: "rename_old"})
    proc.communicate(timeout=180)
    assert proc.returncode == -signal.SIGKILL
    capsys.readouterr()
    assert stack.ops("status") == 0
    out = capsys.readouterr().out
    assert f"pending      database swap of backup {backup_id} at phase rename_old" in out, out
    assert "`ultra-ops recover --environment staging`" in out
    assert stack.ops("recover") == 0
    assert stack.ops("status") == 0
    out = capsys.readouterr().out
    assert "pending" not in out and "last release rollback v1.0.0 interrupted" in out, out


def test_recover_exits_1_when_the_database_does_not_answer(stack: Stack, capsys) -> None:
    stack.config.write_text(stack.config.read_text().replace("port = 5432", f"port = {free_port()}"))
    capsys.readouterr()
    assert stack.ops("recover") == 1
    captured = capsys.readouterr()
    assert "could not check staging for what interrupted runs left" in captured.err, captured.err
    assert "nothing to recover" not in captured.out


def test_records_of_schema_1_take_the_interrupted_status(tmp_path: Path) -> None:
    """A releases database written before `interrupted` existed keeps its rows and accepts it."""
    env = load_settings(checks_config(tmp_path, "unused", "")).environment("staging")
    env.state_dir.mkdir(parents=True)
    path = env.state_dir / "releases.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE releases (
                id INTEGER PRIMARY KEY AUTOINCREMENT, environment TEXT NOT NULL,
                operation TEXT NOT NULL CHECK (operation IN ('deploy', 'rollback')), version TEXT,
                previous_version TEXT,
                status TEXT NOT NULL CHECK (status IN ('deployed', 'failed', 'rolled_back', 'rollback_failed')),
                git_commit TEXT, backup_id TEXT, run_id TEXT, launched_by TEXT, started_at TEXT NOT NULL,
                ended_at TEXT NOT NULL, reason TEXT);
            CREATE INDEX releases_run_id ON releases (run_id);
            INSERT INTO releases (environment, operation, version, status, run_id, started_at, ended_at)
            VALUES ('staging', 'deploy', 'v1.0.0', 'deployed', 'r1', '2026-01-01T00:00:00Z', '2026-01-01T00:01:00Z');
            PRAGMA user_version = 1;
            """
        )
    record_release(
        env,
        ReleaseRecord(
            environment="staging",
            operation="rollback",
            version="v0.9.0",
            previous_version="v1.0.0",
            status=ReleaseStatus.INTERRUPTED,
            run_id="r2",
            started_at="2026-01-02T00:00:00Z",
            ended_at="2026-01-02T00:01:00Z",
        ),
    )
    assert [(r.run_id, r.status) for r in find_releases(env)] == [("r2", "interrupted"), ("r1", "deployed")]
    with sqlite3.connect(path) as conn:
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"releases_run_id", "releases_status", "releases_environment_version"} <= indexes


def test_a_run_ending_without_its_record_is_settled_as_it_lets_go(stack: Stack, capsys) -> None:
    """An interrupt between two steps reaches no step's handler: the run's end (the lock resource's
    teardown calls finish_run) stops what it left half up, records it `interrupted` and keeps its
    marker, so that `recover` starts what ran before."""
    from ultra_ops.engine import runs
    from ultra_ops.engine.release.interrupts import finish_run

    _with_llm(stack)
    assert stack.ops("deploy", "--tag", "v1.0.0", "--skip-tests") == 0
    runs.begin(stack.env, operation="rollback", run_id="run-between-steps")
    draft = ReleaseRecord(
        environment="staging",
        operation="rollback",
        version="v0.9.0",
        previous_version="v1.0.0",
        status=ReleaseStatus.INTERRUPTED,
        run_id="run-between-steps",
        started_at="2026-01-02T00:00:00Z",
        ended_at="2026-01-02T00:00:00Z",
    )
    runs.note_record(stack.env, draft.to_dict())
    backend = next(s for s in stack.env.processes if s.name == "backend")
    get_runtime(stack.env)._stop(backend)  # as a stop step interrupted between its services
    assert _running(stack) == {"backend": False, "llm": True}

    finish_run(stack.env, "run-between-steps")
    assert _running(stack) == {"backend": False, "llm": False}
    record = find_releases(stack.env, run_id="run-between-steps")[0]
    assert record.status == "interrupted" and "staging is STOPPED at v1.0.0" in record.reason, record.reason
    assert json.loads(marker_path(stack.env).read_text())["interrupted"] is True
    capsys.readouterr()
    assert stack.ops("recover") == 0
    assert "started staging's services (backend, llm) at v1.0.0" in capsys.readouterr().out
    assert len(find_releases(stack.env, run_id="run-between-steps")) == 1
