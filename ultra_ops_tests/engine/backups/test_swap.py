"""Crash-safe rollbacks: the database swap killed at each phase, a locked database, a dump that
cannot be restored, and an interrupt during the scratch restore. Real PostgreSQL, real service,
rollbacks run as `python -m ultra_ops.cli` subprocesses where they are killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psycopg
import pytest

from ultra_ops.engine.backups.checksums import hash_file
from ultra_ops.engine.backups.store import list_backups
from ultra_ops.engine.backups.swap import CRASH_ENV, LOCK_TIMEOUT_S, PHASES, journal_path
from ultra_ops.engine.release.records import last_release
from ultra_ops_tests.support.cli import start_cli
from ultra_ops_tests.support.ports import free_port
from ultra_ops_tests.support.services import PG
from ultra_ops_tests.support.stack import Stack

MARK = b"ULTRA_MARK=after-the-backup\n"


def _admin() -> psycopg.Connection:
    return psycopg.connect(**PG, dbname="postgres", autocommit=True)


def _scratch_databases(database: str) -> list[str]:
    with _admin() as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (database.replace("_", "\\_") + "\\_\\_%",)
            ).fetchall()
        ]


def _accepts_connections(database: str) -> bool:
    with _admin() as conn:
        row = conn.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (database,)).fetchone()
    return bool(row and row[0])


def _prepare(stack: Stack, big_rows: int = 0) -> tuple[str, list[tuple], list[tuple], bytes, bytes]:
    """Deploy v1.0.0, back it up, then change the data and the env file. Returns the backup id, the
    rows and env file in the backup, and the rows and env file after it."""
    assert stack.ops("deploy", "--tag", "v1.0.0", "--skip-tests") == 0
    if big_rows:
        with psycopg.connect(**PG, dbname=stack.database, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE big AS SELECT i, md5(i::text) || md5(random()::text) AS t FROM generate_series(1, %s) i",
                (big_rows,),
            )
            conn.execute("CREATE INDEX ON big (t)")
    assert stack.ops("backups", "create") == 0
    backup = list_backups(stack.env)[0]
    assert backup.label == "manual"
    rows_backup, env_backup = stack.rows(), stack.env.env_file.read_bytes()
    with psycopg.connect(**PG, dbname=stack.database, autocommit=True) as conn:
        conn.execute("INSERT INTO prompts (title) VALUES ('written after the backup')")
    stack.env.env_file.write_bytes(env_backup + MARK)
    rows_after, env_after = stack.rows(), stack.env.env_file.read_bytes()
    assert rows_after != rows_backup
    return backup.id, rows_backup, rows_after, env_backup, env_after


def _cli(stack: Stack, *argv: str, extra_env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, **(extra_env or {})}
    return start_cli(*argv, environment="staging", config=stack.config, env=env, **kwargs)


def _consistent_side(stack: Stack, rows_backup, rows_after, env_backup, env_after) -> str:
    """Which side the environment is on, asserting that database and env file agree."""
    assert _accepts_connections(stack.database)
    rows, env_file = stack.rows(), stack.env.env_file.read_bytes()
    if rows == rows_backup:
        assert env_file == env_backup, "restored database beside the env file of the release it replaced"
        return "restored"
    assert rows == rows_after, rows
    assert env_file == env_after, "the old database beside a restored env file"
    return "old"


def _expected_side(phase: str) -> str:
    return "restored" if PHASES.index(phase) > PHASES.index("rename_new") else "old"


# Killed right after the final rename committed, before the journal says so: the database decides.
COMMITTED = "rename_new:committed"


@pytest.mark.parametrize("phase", [*PHASES, COMMITTED])
def test_rollback_killed_at_each_swap_phase_then_recover(stack: Stack, phase: str, capsys) -> None:
    backup_id, *states = _prepare(stack)
    proc = _cli(stack, "rollback", "--backup", backup_id, "--yes", extra_env={CRASH_ENV: phase})
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == -signal.SIGKILL, err
    journal = json.loads(journal_path(stack.env).read_text())
    assert journal["phase"] == phase.split(":")[0] and journal["backup_id"] == backup_id
    (stack.env.state_dir / ".swap.json.99999").write_text("{")  # as a kill while writing the journal leaves
    committed = phase == COMMITTED
    phase = phase.split(":")[0]

    capsys.readouterr()
    assert stack.ops("recover") == 0
    out = capsys.readouterr().out
    side = "restored" if committed else _expected_side(phase)
    direction = "finished the swap" if side == "restored" else "undid the swap"
    assert f"{direction} of backup {backup_id} (interrupted at {phase})" in out
    assert "removed" in out and ".swap.json.99999" in out
    assert _consistent_side(stack, *states) == side
    assert _scratch_databases(stack.database) == []
    assert not journal_path(stack.env).exists() and not (stack.env.state_dir / ".swap.json.99999").exists()
    # A second recover finds nothing left to do.
    assert stack.ops("recover") == 0
    assert "nothing to recover" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("phase", "next_operation"), [("rename_new", "deploy"), ("files", "rollback"), ("restoring", "backup")]
)
def test_next_operation_recovers_a_killed_rollback_first(stack: Stack, phase: str, next_operation: str, capsys) -> None:
    backup_id, *states = _prepare(stack)
    proc = _cli(stack, "rollback", "--backup", backup_id, "--yes", extra_env={CRASH_ENV: phase})
    proc.communicate(timeout=180)
    assert proc.returncode == -signal.SIGKILL
    if phase == "rename_new":
        with _admin() as conn:  # the killed run left the database renamed away: no deploy could run on it
            assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (stack.database,)).fetchone() is None
    capsys.readouterr()
    if next_operation == "deploy":
        assert stack.ops("deploy", "--tag", "v1.0.1", "--skip-tests") == 0
        assert stack.get("/health").json()["version"] == "v1.0.1"
        assert stack.rows() == states[1]  # the data of before the killed rollback
    elif next_operation == "rollback":
        assert stack.ops("rollback", "--backup", backup_id) == 0
        assert stack.get("/health").json()["version"] == "v1.0.0"
        assert stack.rows() == states[0]
    else:
        assert stack.ops("backups", "create") == 0
        assert _consistent_side(stack, *states) == "old"
    err = capsys.readouterr().err
    direction = "finished the swap" if _expected_side(phase) == "restored" else "undid the swap"
    assert f"{direction} of backup {backup_id} (interrupted at {phase})" in err
    assert _scratch_databases(stack.database) == []
    assert not journal_path(stack.env).exists()


def test_locked_database_fails_the_swap_within_its_lock_timeout(stack: Stack, capsys) -> None:
    backup_id, rows_backup, rows_after, env_backup, env_after = _prepare(stack)
    blocker = _admin()
    try:
        blocker.autocommit = False
        blocker.execute(f"COMMENT ON DATABASE \"{stack.database}\" IS 'held by a test'")  # lock held until rollback
        capsys.readouterr()
        started = time.monotonic()
        assert stack.ops("rollback", "--backup", backup_id) == 1
        took = time.monotonic() - started
        err = capsys.readouterr().err
        assert "lock timeout" in err and "undid the swap" in err and "staging restarted at v1.0.0" in err, err
        # The old database and env file, the service up again, no scratch database, and no rename
        # left pending in the server for when the blocker lets go.
        assert stack.rows() == rows_after and stack.env.env_file.read_bytes() == env_after
        assert stack.get("/health").json()["status"] == "ok"
        assert _scratch_databases(stack.database) == []
    finally:
        blocker.rollback()
        blocker.close()
    time.sleep(LOCK_TIMEOUT_S / 5)  # what a pending RENAME would need to go through once the lock is free
    assert _accepts_connections(stack.database) and stack.rows() == rows_after
    assert _scratch_databases(stack.database) == []
    assert took < 120, took  # bounded: the swap gave up after its lock timeout instead of waiting
    record = last_release(stack.env)
    assert (record.operation, record.status) == ("rollback", "rollback_failed")
    assert "restarted" in record.reason


def test_rollback_whose_dump_cannot_be_restored_keeps_the_service_up(stack: Stack, capsys) -> None:
    stack.env.env_file.write_text("ULTRA_FEATURE_FLAGS=search\nULTRA_VERSION=\n")
    backup_id, rows_backup, rows_after, env_backup, env_after = _prepare(stack)
    backup = next(b for b in list_backups(stack.env) if b.id == backup_id)
    # Data files that pg_restore cannot read, with a manifest that matches them: checksums pass.
    manifest = json.loads((backup.path / "manifest.json").read_text())
    for rel in list(manifest["files"]):
        if rel.startswith("database/") and rel.endswith(".dat.gz"):
            (backup.path / rel).write_bytes(b"not gzip at all")
            size, digest = hash_file(backup.path / rel)
            manifest["files"][rel] = {"size": size, "sha256": digest}
    (backup.path / "manifest.json").write_text(json.dumps(manifest))
    pid_file = stack.env.state_dir / "run" / "backend.pid"
    pid_before = json.loads(pid_file.read_text())["pid"]
    capsys.readouterr()
    assert stack.ops("rollback", "--backup", backup_id) == 1
    err = capsys.readouterr().err
    assert "pg_restore" in err and "nothing was stopped: staging still runs v1.0.0" in err, err
    assert stack.get("/health").json()["status"] == "ok"
    assert json.loads(pid_file.read_text())["pid"] == pid_before  # never stopped
    assert stack.rows() == rows_after and stack.env.env_file.read_bytes() == env_after
    assert _scratch_databases(stack.database) == [] and not journal_path(stack.env).exists()
    record = last_release(stack.env)
    assert (record.operation, record.status, record.backup_id) == ("rollback", "failed", backup_id)


@pytest.mark.parametrize("signo", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_during_the_scratch_restore_leaves_everything_as_it_was(stack: Stack, signo: int) -> None:
    backup_id, rows_backup, rows_after, env_backup, env_after = _prepare(stack, big_rows=400_000)
    proc = _cli(stack, "rollback", "--backup", backup_id, "--yes")
    try:
        deadline = time.monotonic() + 120
        with _admin() as conn:
            while not conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'ultra_ops-restore' AND datname LIKE %s",
                (stack.database + "\\_\\_restore\\_%",),
            ).fetchone():
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "pg_restore never started"
                time.sleep(0.02)
        proc.send_signal(signo)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert stack.rows() == rows_after and stack.env.env_file.read_bytes() == env_after
    assert _accepts_connections(stack.database)
    assert _scratch_databases(stack.database) == [] and not journal_path(stack.env).exists()
    assert stack.get("/health").json()["status"] == "ok"  # the service was never stopped


def test_rollback_with_the_database_port_closed_keeps_the_service_up(stack: Stack, capsys) -> None:
    backup_id, rows_backup, rows_after, env_backup, env_after = _prepare(stack)
    pid_file = stack.env.state_dir / "run" / "backend.pid"
    pid_before = json.loads(pid_file.read_text())["pid"]
    # The operator's config now points at a port where no PostgreSQL answers.
    closed = free_port()
    stack.config.write_text(stack.config.read_text().replace("port = 5432", f"port = {closed}"))
    capsys.readouterr()
    assert stack.ops("rollback", "--backup", backup_id) == 1
    err = capsys.readouterr().err
    assert "nothing was stopped: staging still runs v1.0.0" in err, err
    assert stack.get("/health").json()["status"] == "ok"
    assert json.loads(pid_file.read_text())["pid"] == pid_before
    assert stack.rows() == rows_after and stack.env.env_file.read_bytes() == env_after
    assert len([b for b in list_backups(stack.env) if b.label.startswith("safety")]) == 0


def test_services_that_do_not_start_again_are_reported_stopped(tmp_path, pg_database: str) -> None:
    """Engine level: a service whose command exits at once. A swap that fails (locked database)
    and a swap that succeeds are each followed by a start that fails: both errors say so."""
    from ultra_ops.engine.backups.create import create_backup
    from ultra_ops.engine.errors import OperationError
    from ultra_ops.engine.release import rollback
    from ultra_ops.engine.secrets import NullLog, Redactor
    from ultra_ops.engine.settings import load_settings
    from ultra_ops_tests.support.configs import write_config

    path = write_config(tmp_path, pg_database)
    text = path.read_text()
    start = text.index("command = [")
    path.write_text(text[:start] + 'command = ["false"]' + text[text.index("\n", start) :])
    env = load_settings(path).environment("staging")
    env.env_file.write_text("ULTRA_VERSION=v1.0.0\n")
    env.env_file.chmod(0o600)
    with psycopg.connect(**PG, dbname=pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE items AS SELECT 1 AS id")
    info = create_backup(env, version="v1.0.0")
    log, redact = NullLog(), Redactor()

    def prepared():  # noqa: ANN202
        plan = rollback.check_backup(env, rollback.plan_rollback(env, info.id), log=log)
        plan = rollback.prepare_state(env, plan, log=log, redact=redact)
        rollback.stop_services(env, plan, log=log, redact=redact)
        return plan

    plan = prepared()
    blocker = _admin()
    try:
        blocker.autocommit = False
        blocker.execute(f"COMMENT ON DATABASE \"{pg_database}\" IS 'held by a test'")
        with pytest.raises(OperationError) as failed:
            rollback.swap_state(env, plan, log=log, redact=redact)
    finally:
        blocker.rollback()
        blocker.close()
    message = str(failed.value)
    assert "lock timeout" in message and "undid the swap" in message
    assert "staging is STOPPED: its services did not start again" in message
    assert "ultra-ops deploy --environment staging --tag v1.0.0" in message
    assert _scratch_databases(pg_database) == [] and _accepts_connections(pg_database)

    plan = rollback.swap_state(env, prepared(), log=log, redact=redact)
    with pytest.raises(OperationError) as failed:
        rollback.start_services(env, plan, log=log, redact=redact)
    message = str(failed.value)
    assert f"staging is STOPPED: backup {info.id} is in place" in message
    assert f"--backup {plan.safety_backup_id}` puts back the state before this rollback" in message
    # The replaced database stays until the next operation's recovery, which drops it.
    from ultra_ops.engine.release.recover import recover_environment

    done = recover_environment(env)
    assert any("finished the swap" in line for line in done), done
    assert _scratch_databases(pg_database) == [] and not journal_path(env).exists()
