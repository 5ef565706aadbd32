"""A backup behind a held table lock fails within its lock wait, naming the session that holds it."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from ultra_ops.engine.backups.create import create_backup
from ultra_ops.engine.backups.store import list_backups
from ultra_ops.engine.errors import BackupError
from ultra_ops.engine.settings import Environment, load_settings
from ultra_ops_tests.support.configs import write_config

LOCK_WAIT_S = 0.5
TIMEOUT_S = 30


def _env(tmp_path: Path, database: str, fmt: str) -> Environment:
    path = write_config(tmp_path, database, backup_format=fmt)
    old = f'format = "{fmt}"'
    # timeout_s: what the backup would wait otherwise (6 h by default), short so a failing test ends.
    backup = f"{old}\nlock_wait_timeout_s = {LOCK_WAIT_S}\ntimeout_s = {TIMEOUT_S}"
    path.write_text(path.read_text().replace(old, backup, 1))
    env = load_settings(path).environment("staging")
    assert env.backup.lock_wait_timeout_s == LOCK_WAIT_S
    env.env_file.write_text("ULTRA_VERSION=v1.0.0\n")
    env.env_file.chmod(0o600)
    with psycopg.connect(**env.database.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
        conn.execute("INSERT INTO items SELECT generate_series(1, 100)")
    return env


@pytest.mark.parametrize("fmt", ["directory", "custom"])
def test_a_backup_behind_a_table_lock_fails_fast_naming_the_holder(tmp_path: Path, pg_database: str, fmt: str) -> None:
    env = _env(tmp_path, pg_database, fmt)
    # A migration or a forgotten session in another terminal: an open transaction holding the table.
    with psycopg.connect(**env.database.conninfo(), application_name="uo-test-migration") as blocker:
        blocker.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        pid = blocker.info.backend_pid
        started = time.monotonic()
        with pytest.raises(BackupError) as info:
            create_backup(env, label="safety")
        elapsed = time.monotonic() - started
        message = str(info.value)
        assert f"pid {pid} (uo-test-migration, user " in message, message
        assert "idle in transaction" in message and "on items" in message, message
        assert f"waiting {LOCK_WAIT_S:g} s for a lock on public.items" in message, message
        assert "lock_wait_timeout_s" in message
        assert elapsed < TIMEOUT_S / 2, elapsed  # the lock wait and the look-up, not backup.timeout_s
        assert list_backups(env) == [] and list(env.backups_path.iterdir()) == []  # nothing half written
    # Once the session has let go, the same backup goes through.
    assert create_backup(env, label="safety").tables == {"public.items": 100}
