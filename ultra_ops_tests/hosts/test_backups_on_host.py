"""Backups of an environment on a host of its own: pg_dump runs in the host's database container,
the dump is kept on this machine (none is written on the host), with the manifest, checksums,
restore tests, retention and rollback of any backup; a backup survives the host losing its data; a
network cut in the middle of a backup fails it within 10 s, keeping nothing, and one in the middle of
a rollback's restore fails it within 10 s with nothing swapped, which recover tidies up."""

from __future__ import annotations

import json
import os
import shlex
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from ultra_ops.engine.backups import swap
from ultra_ops.engine.backups.create import create_backup
from ultra_ops.engine.backups.hosted import RESTORE_STREAMING_POINT, STREAMING_POINT
from ultra_ops.engine.backups.restore import restore_backup
from ultra_ops.engine.backups.retention import prune_backups
from ultra_ops.engine.backups.store import DUMP_FILE, MANIFEST, list_backups, verify_backup
from ultra_ops.engine.backups.trial_restore import restore_test
from ultra_ops.engine.crash_points import PAUSE_ENV
from ultra_ops.engine.errors import BackupError
from ultra_ops.engine.hosts.reach import Reach
from ultra_ops.engine.release.recover import recover_environment
from ultra_ops.engine.release.rollback import rollback
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.settings import Environment, load_settings
from ultra_ops_tests.support.cli import run_cli
from ultra_ops_tests.support.hosts import TestHost, host_config

pytestmark = [pytest.mark.docker, pytest.mark.host_images("ultra-local/postgres:15")]

PASSWORD = "pg-Pa55word-not-for-logs"
COMPOSE = """\
version: "3.8"
services:
  postgres:
    image: ultra-local/postgres:15
    environment:
      POSTGRES_USER: ultra
      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}
      POSTGRES_DB: ultra_staging
    ports: ["5432:5432"]
    volumes: ["pgdata:/var/lib/postgresql/data"]
    stop_signal: SIGINT
volumes:
  pgdata: {}
"""


def _hosted_environment(tmp_path: Path, host: TestHost, *, loopback: bool = False) -> Environment:
    """staging on `host` (ultra-local/postgres:15 in its engine from its start: the module's
    host_images): its PostgreSQL in the compose project there, reached on the host's
    published port (or, `loopback`, published on the host's loopback only and configured as
    127.0.0.1: reached through tunnels, engine/hosts/reach.py), the password in the env file
    (password_key), as a compose environment keeps it. Returns the environment as configured."""
    compose = COMPOSE.replace('["5432:5432"]', '["127.0.0.1:5432:5432"]') if loopback else COMPOSE
    config = host_config(
        tmp_path, host, compose=compose, env_file=f"ULTRA_VERSION=v1.0.0\nPOSTGRES_PASSWORD={PASSWORD}\n"
    )
    text = config.read_text().replace('user = "ultra"\n', 'user = "ultra"\npassword_key = "POSTGRES_PASSWORD"\n', 1)
    if loopback:
        text = text.replace(f'host = "{host.address}"\nport = 5432', 'host = "127.0.0.1"\nport = 5432', 1)
    config.write_text(text)
    env = load_settings(config).environment("staging")
    assert get_runtime(env).up_stores() == ["postgres"]
    with Reach(env) as reached:
        _wait_answers(reached)
    return env


def _start_stores(env: Environment) -> None:
    assert get_runtime(env).up_stores() == ["postgres"]
    _wait_answers(env)


def _wait_answers(env: Environment) -> None:
    """Until the environment's database accepts a connection from here (started, or back on the network)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with psycopg.connect(**env.database.conninfo()) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _connect(env: Environment) -> psycopg.Connection:
    return psycopg.connect(**env.database.conninfo(), autocommit=True)


def _seed(env: Environment, rows: int) -> None:
    with _connect(env) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)")
        conn.execute(
            "INSERT INTO items SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, %s) g", (rows,)
        )


def _items(env: Environment) -> tuple[int, int]:
    """(rows, sum of ids) of the items table."""
    with _connect(env) as conn:
        count, total = conn.execute("SELECT count(*), coalesce(sum(id), 0) FROM items").fetchone()
    return int(count), int(total)


def _databases(env: Environment) -> set[str]:
    with psycopg.connect(**env.database.conninfo("postgres"), autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate").fetchall()}


def _big_files_on_host(host: TestHost, marker: str, at_least: int) -> list[str]:
    """Files on the host (its containers' file systems included, its volumes' data left out)
    changed since `marker` and of at least `at_least` bytes."""
    proc = host.exec(
        "find",
        "/",
        "(",
        "-path",
        "/proc",
        "-o",
        "-path",
        "/sys",
        "-o",
        "-path",
        "/var/lib/docker/volumes",
        ")",
        "-prune",
        "-o",
        "-type",
        "f",
        "-newer",
        marker,
        "-size",
        f"+{at_least // 1024}k",
        "-print",
    )
    return proc.stdout.split()


def test_backups_taken_on_the_host_kept_here_restored_and_rolled_back(host: TestHost, tmp_path: Path) -> None:
    env = _hosted_environment(tmp_path, host)
    _seed(env, 5000)
    before = _items(env)
    host.exec("touch", "/tmp/before-backup")

    first = create_backup(env, version="v1.0.0", label="manual")

    # Kept here, in custom format, with the manifest and checksums of any backup.
    assert first.path.parent == env.backups_path and first.format == "custom"
    assert (first.path / DUMP_FILE).stat().st_size > 100_000
    assert verify_backup(env, first.id).files == first.files
    manifest = json.loads((first.path / MANIFEST).read_text())
    assert manifest["tools"]["pg_dump"].startswith("pg_dump (PostgreSQL) 15.")
    assert manifest["database"]["dumped_on"] == f"deploy@{host.address}:22"
    assert manifest["tables"] == {"public.items": 5000}
    # Nothing the size of the dump was written on the host, in its containers or elsewhere (and a
    # file that size written there is found: the search can fail).
    half = first.files[DUMP_FILE]["size"] // 2
    assert _big_files_on_host(host, "/tmp/before-backup", half) == []
    host.exec("sh", "-c", f"head -c {half + 4096} /dev/urandom > /srv/control")
    assert _big_files_on_host(host, "/tmp/before-backup", half) == ["/srv/control"]
    assert PASSWORD not in json.dumps(manifest)

    # The restore test restores it into a scratch database on the host and counts its rows.
    report = restore_test(env, first)
    assert report.passed, report.summary()
    assert report.restored == {"public.items": 5000}
    assert _databases(env) == {"postgres", "ultra_staging"}

    # Retention, as for any backup: the newest two kept.
    second = create_backup(env, version="v1.0.0", label="manual")
    third = create_backup(env, version="v1.0.0", label="manual")
    removed = [d.backup_id for d in prune_backups(env, keep=2) if not d.keep]
    assert removed == [first.id]
    assert [b.id for b in list_backups(env)] == [third.id, second.id]

    # A rollback restores the backup kept here into the host's database: scratch, then swap.
    with _connect(env) as conn:
        conn.execute("DELETE FROM items WHERE id > 1000")
        conn.execute("INSERT INTO items VALUES (999999, 'after the backup')")
    assert _items(env) != before
    result = rollback(env, third.id, verify=False)
    assert _items(env) == before
    assert result.safety_backup_id is not None
    assert verify_backup(env, result.safety_backup_id).tables == {"public.items": 1001}
    assert _databases(env) == {"postgres", "ultra_staging"}, "no scratch or replaced database left"

    # The host loses its database's volume: the backup kept here brings the data back.
    runtime = get_runtime(env)
    down = host.ssh(shlex.join([*runtime.compose_base(), "down", "-v"]))
    assert down.returncode == 0, down.stderr
    listed = list_backups(env)
    with pytest.raises(BackupError) as caught:
        create_backup(env, version="v1.0.0", label="manual")
    # The database is gone with its container: said, nothing listed or left.
    assert str(caught.value).startswith("cannot open a snapshot of ultra_staging: connection failed")
    assert list_backups(env) == listed
    assert not [p for p in env.backups_path.iterdir() if p.name.startswith(".tmp-")]
    _start_stores(env)
    with _connect(env) as conn:
        assert conn.execute("SELECT to_regclass('public.items')").fetchone()[0] is None
    restored = restore_backup(env, third.id)
    assert restored["backup_id"] == third.id
    assert _items(env) == before
    assert verify_backup(env, third.id).id == third.id


def test_a_network_cut_in_the_middle_of_a_backup(
    host: TestHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _hosted_environment(tmp_path, host)
    # Bigger than what ssh's window and the sockets hold: pg_dump is still writing at the cut.
    _seed(env, 300_000)
    kept = create_backup(env, version="v1.0.0", label="manual", compression=0)
    reached = tmp_path / "streaming"
    monkeypatch.setenv(PAUSE_ENV, f"{STREAMING_POINT}={reached}")
    # The dump goes on reading after the pause: into a cut network.
    outcome, cut_at = _cut_while_paused(
        host, reached, lambda: create_backup(env, version="v1.0.0", label="manual", compression=0), 60
    )
    monkeypatch.delenv(PAUSE_ENV)

    error = outcome.get("error")
    assert isinstance(error, BackupError), outcome
    assert float(outcome["ended"]) - cut_at < 10  # type: ignore[arg-type]
    message = str(error)
    assert f"pg_dump on staging's host deploy@{host.address}:22 failed: the connection was lost" in message
    assert "nothing kept: the partial dump here is removed (no backup listed)" in message
    assert PASSWORD not in message
    assert [b.id for b in list_backups(env)] == [kept.id]
    assert sorted(p.name for p in env.backups_path.iterdir()) == [kept.id], "no temporary folder left"

    host.restore()
    _wait_answers(env)
    # The host lets go of the dead session (its sshd's keepalives), and pg_dump's with it.
    deadline = time.monotonic() + 60
    while True:
        with _connect(env) as conn:
            left = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ultra_ops-backup'")
            if left.fetchone()[0] == 0:
                break
        assert time.monotonic() < deadline, "pg_dump of the cut backup still runs on the host"
        time.sleep(0.5)
    again = create_backup(env, version="v1.0.0", label="manual")
    assert verify_backup(env, again.id).tables == {"public.items": 300_000}
    assert [b.id for b in list_backups(env)] == [again.id, kept.id]


def test_the_backup_commands_on_a_hosted_environment_reached_through_tunnels(
    host: TestHost, tmp_path: Path, dagster_home: Path
) -> None:
    env = _hosted_environment(tmp_path, host, loopback=True)
    assert env.database.host == "127.0.0.1"
    with Reach(env) as reached:
        _seed(reached, 2000)
    config = tmp_path / "ultra_ops.toml"
    config.write_text(config.read_text() + "[environments.staging.backup]\nkeep = 1\n")
    environ = {**os.environ, "DAGSTER_HOME": str(dagster_home)}

    for _ in range(2):
        done = run_cli("backups", "create", config=config, environment="staging", env=environ)
        assert done.returncode == 0, done.stdout + done.stderr
    first, second = sorted(b.id for b in list_backups(env))

    checked = run_cli("backups", "verify", "--restore-test", config=config, environment="staging", env=environ)
    said = checked.stdout + checked.stderr
    assert checked.returncode == 0, said
    assert f"{first}: ok\n{second}: ok\n" in said, said
    assert f"backup_restore_test: ok: staging: backup {second} restored: 1 tables, 2000 rows" in said, said
    assert PASSWORD not in said

    pruned = run_cli("backups", "prune", config=config, environment="staging", env=environ)
    said = pruned.stdout + pruned.stderr
    assert pruned.returncode == 0, said
    assert f"removed {first}" in said and f"keep   {second}" in said, said
    assert [b.id for b in list_backups(env)] == [second]


def test_a_network_cut_in_the_middle_of_a_rollback_then_recover(
    host: TestHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _hosted_environment(tmp_path, host)
    _seed(env, 300_000)
    kept = create_backup(env, version="v1.0.0", label="manual", compression=0)
    with _connect(env) as conn:
        conn.execute("DELETE FROM items WHERE id > 1000")
    current = _items(env)
    reached = tmp_path / "streaming"
    monkeypatch.setenv(PAUSE_ENV, f"{RESTORE_STREAMING_POINT}={reached}")
    # pg_restore's input goes on after the pause: into a cut network.
    outcome, cut_at = _cut_while_paused(host, reached, lambda: rollback(env, kept.id, verify=False), 120)
    monkeypatch.delenv(PAUSE_ENV)

    error = outcome.get("error")
    assert isinstance(error, BackupError), outcome
    assert float(outcome["ended"]) - cut_at < 10  # type: ignore[arg-type]
    message = str(error)
    assert f"pg_restore on staging's host deploy@{host.address}:22 failed: the connection was lost" in message
    assert "nothing swapped: ultra_staging is as it was" in message
    assert "nothing was stopped: staging still runs v1.0.0" in message
    assert PASSWORD not in message
    journal = swap.read_journal(env)
    assert journal is not None and journal.phase == "restoring"

    # Once the host answers, recover drops what the cut left; the database is as it was.
    host.restore()
    _wait_answers(env)
    done = recover_environment(env)
    assert any(line.startswith(f"undid the swap of backup {kept.id} (interrupted at restoring)") for line in done), done
    assert swap.read_journal(env) is None
    assert _databases(env) == {"postgres", "ultra_staging"}
    assert _items(env) == current
    # And the rollback goes through.
    rollback(env, kept.id, verify=False)
    assert _items(env) == (300_000, 300_000 * 300_001 // 2)


def _cut_while_paused(
    host: TestHost, reached: Path, operation: Callable[[], object], wait_s: float
) -> tuple[dict[str, object], float]:
    """Run `operation` in a thread until it pauses at its pause point (the file `reached` appears),
    cut the host's network, let it go on and wait for its end: what it returned or raised, when it
    ended, and when the cut was made."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = operation()
        except BaseException as exc:  # noqa: BLE001 - read by the test
            outcome["error"] = exc
        outcome["ended"] = time.monotonic()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    deadline = time.monotonic() + wait_s
    while not reached.exists():
        assert worker.is_alive() and time.monotonic() < deadline, outcome
        time.sleep(0.05)
    host.cut()
    cut_at = time.monotonic()
    reached.unlink()
    worker.join(timeout=30)
    assert not worker.is_alive()
    return outcome, cut_at
