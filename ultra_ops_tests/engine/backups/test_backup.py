"""Backups and restores against a real PostgreSQL: create, list, verify, restore, crash safety."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from ultra_ops.engine.backups.checksums import hash_file
from ultra_ops.engine.backups.create import create_backup
from ultra_ops.engine.backups.restore import restore_backup
from ultra_ops.engine.backups.store import get_backup, list_backups, verify_backup
from ultra_ops.engine.backups.trial_restore import restore_test
from ultra_ops.engine.errors import BackupError, InputError, IntegrityError
from ultra_ops.engine.settings import Environment, load_settings
from ultra_ops_tests.support.configs import write_config
from ultra_ops_tests.support.services import PG

ENV_BYTES = b"ULTRA_VERSION=v1.0.0\nAPI_TOKEN=tok-0123456789\n"


def _env(tmp_path: Path, database: str, **kwargs) -> Environment:
    env = load_settings(write_config(tmp_path, database, **kwargs)).environment("staging")
    env.env_file.write_bytes(ENV_BYTES)
    env.env_file.chmod(0o600)
    return env


def _connect(env: Environment) -> psycopg.Connection:
    return psycopg.connect(**env.database.conninfo(), autocommit=True)


def _seed(env: Environment, rows: int = 100) -> None:
    with _connect(env) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, data jsonb)")
        conn.execute(
            "INSERT INTO items SELECT i, 'item ' || i, jsonb_build_object('n', i) FROM generate_series(1, %s) i",
            (rows,),
        )


def _rows(env: Environment) -> list[tuple]:
    with _connect(env) as conn:
        return conn.execute("SELECT id, name, data::text FROM items ORDER BY id").fetchall()


def _tables(env: Environment) -> list[str]:
    with _connect(env) as conn:
        return [
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()
        ]


def _change_everything(env: Environment) -> None:
    with _connect(env) as conn:
        conn.execute("UPDATE items SET name = 'changed' WHERE id <= 10")
        conn.execute("DELETE FROM items WHERE id > 90")
        conn.execute("INSERT INTO items VALUES (1000, 'new', NULL)")
        conn.execute("CREATE TABLE added_later (x int)")
    env.env_file.write_bytes(b"ULTRA_VERSION=v1.1.0\nAPI_TOKEN=other-token\n")


@pytest.mark.parametrize("fmt", ["directory", "custom"])
def test_backup_then_restore_brings_back_exact_state(tmp_path: Path, pg_database: str, fmt: str) -> None:
    env = _env(tmp_path, pg_database, backup_format=fmt)
    _seed(env)
    before = _rows(env)
    info = create_backup(env, version="v1.0.0", label="pre-deploy v1.1.0")

    assert info.format == fmt and info.version == "v1.0.0" and info.label == "pre-deploy v1.1.0"
    assert (info.path / ("database" if fmt == "directory" else "database.dump")).exists()
    manifest = json.loads((info.path / "manifest.json").read_text())
    assert manifest["tools"]["pg_dump"].startswith("pg_dump (PostgreSQL)")
    assert manifest["tools"]["ultra_ops"]
    assert set(manifest["files"]) == set(info.files) and "files.tar.gz" in info.files
    assert info.size_bytes == sum(f["size"] for f in info.files.values())
    assert [b.id for b in list_backups(env)] == [info.id]
    assert get_backup(env, info.id) == info
    assert verify_backup(env, info.id).to_dict()["path"] == str(info.path)
    json.dumps(info.to_dict())
    # The manual rollback of the release document: extract files.tar.gz into rollback/.
    with tarfile.open(info.path / "files.tar.gz") as tar:
        names = tar.getnames()
    assert "root/.env.staging" in names and "ultra_ops.toml" in names

    _change_everything(env)
    result = restore_backup(env, info.id)

    assert _rows(env) == before
    assert _tables(env) == ["items"]
    assert env.env_file.read_bytes() == ENV_BYTES
    assert env.env_file.stat().st_mode & 0o777 == 0o600
    assert result["backup_id"] == info.id
    assert str(env.env_file) in result["files_restored"]
    safety = get_backup(env, result["safety_backup_id"])
    assert safety.label == f"safety before restore of {info.id}" and safety.version == "v1.1.0"
    assert [b.id for b in list_backups(env)] == [safety.id, info.id]
    # The safety backup holds the state just before the restore, and is itself restorable.
    restore_backup(env, safety.id, safety_backup=False)
    assert "added_later" in _tables(env)
    assert env.env_file.read_bytes() == b"ULTRA_VERSION=v1.1.0\nAPI_TOKEN=other-token\n"
    with psycopg.connect(**PG, dbname="postgres") as conn:
        leftovers = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (pg_database + "\\_\\_%",)
        ).fetchall()
    assert leftovers == []


def test_flipped_byte_is_refused_and_nothing_changes(tmp_path: Path, pg_database: str) -> None:
    env = _env(tmp_path, pg_database)
    _seed(env)
    info = create_backup(env)
    _change_everything(env)
    rows, env_bytes = _rows(env), env.env_file.read_bytes()
    dump = max(
        (p for p in (info.path / "database").iterdir() if p.name.endswith(".dat.gz")), key=lambda p: p.stat().st_size
    )
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01
    dump.write_bytes(bytes(data))

    with pytest.raises(IntegrityError, match=f"database/{dump.name}"):
        verify_backup(env, info.id)
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        restore_backup(env, info.id)
    assert _rows(env) == rows and "added_later" in _tables(env)
    assert env.env_file.read_bytes() == env_bytes
    assert [b.id for b in list_backups(env)] == [info.id]  # no safety backup was taken

    (info.path / "extra.txt").write_text("x")
    with pytest.raises(IntegrityError, match="extra.txt"):
        verify_backup(env, info.id)


def test_missing_file_is_refused(tmp_path: Path, pg_database: str) -> None:
    env = _env(tmp_path, pg_database, backup_format="custom")
    _seed(env, 5)
    info = create_backup(env)
    (info.path / "files.tar.gz").unlink()
    with pytest.raises(IntegrityError, match="files.tar.gz is missing"):
        verify_backup(env, info.id)


def test_archive_with_unsafe_member_is_refused(tmp_path: Path, pg_database: str) -> None:
    env = _env(tmp_path, pg_database)
    _seed(env, 5)
    info = create_backup(env)
    evil = tmp_path / "evil.txt"
    evil.write_text("evil")
    archive = info.path / "files.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(evil, arcname="../escaped.txt")
    # Re-seal the manifest so only the member check can catch it.
    manifest = json.loads((info.path / "manifest.json").read_text())
    size, digest = hash_file(archive)
    manifest["files"]["files.tar.gz"] = {"size": size, "sha256": digest}
    (info.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="unsafe path"):
        restore_backup(env, info.id)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "root" / ".." / "escaped.txt").exists()
    assert len(list_backups(env)) == 1


KILL_SCRIPT = """
import sys
from ultra_ops.engine.settings import load_settings
from ultra_ops.engine.backups.create import create_backup
create_backup(load_settings(sys.argv[1]).environment("staging"), jobs=1, compression=9)
"""


def test_backup_killed_half_way_is_never_listed(tmp_path: Path, pg_database: str) -> None:
    env = _env(tmp_path, pg_database)
    with _connect(env) as conn:
        # Random text compresses badly at -Z9: pg_dump runs for a few seconds.
        conn.execute(
            "CREATE TABLE big AS SELECT i, md5(i::text) || md5(random()::text) AS t FROM generate_series(1, 600000) i"
        )
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(env.config_file)])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            temps = list(env.backups_path.glob(".tmp-*/database/*.dat.gz")) if env.backups_path.exists() else []
            if temps:
                break
            assert proc.poll() is None, "the backup finished before it could be killed"
            time.sleep(0.02)
        assert temps, "pg_dump never started writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    # pg_dump dies with its parent instead of writing on into a folder nobody owns.
    deadline = time.monotonic() + 5
    with psycopg.connect(**PG, dbname="postgres", autocommit=True) as conn:
        while conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'ultra_ops-backup'",
            (pg_database,),
        ).fetchone()[0]:
            assert time.monotonic() < deadline, "pg_dump outlived the killed backup"
            time.sleep(0.05)
    assert list_backups(env) == []
    left = sorted(p.name for p in env.backups_path.iterdir())
    assert len(left) == 2 and left[0].startswith(".tmp-") and left[1] == left[0] + ".owner"

    info = create_backup(env)
    assert [b.id for b in list_backups(env)] == [info.id]
    # The dead writer's temp folder was cleaned up by the next backup.
    assert [p.name for p in env.backups_path.iterdir()] == [info.id]


@pytest.mark.parametrize("fmt", ["directory", "custom"])
def test_full_disk_fails_in_one_error_and_leaves_nothing(tmp_path: Path, pg_database: str, fmt: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    env = _env(tmp_path, pg_database, backup_format=fmt)
    with _connect(env) as conn:
        # About 4 MB of random hex, which gzip halves at best: it does not fit in 1 MB.
        conn.execute(
            "CREATE TABLE big AS SELECT i, md5(random()::text) || md5(random()::text) AS t "
            "FROM generate_series(1, 60000) i"
        )
    env.backups_path.mkdir(parents=True)
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(env.backups_path)]
    subprocess.run(mount, check=True, capture_output=True, timeout=30)
    try:
        with pytest.raises(BackupError) as info:
            create_backup(env)
        message = str(info.value)
        assert "no space left on the disk mounted at " + str(env.backups_path) in message, message
        assert "Nothing was kept" in message and message.count("\n") == 0
        assert list_backups(env) == [] and list(env.backups_path.iterdir()) == []
        # Space back: the same backup goes through.
        subprocess.run(["mount", "-o", "remount,size=32m", str(env.backups_path)], check=True, timeout=30)
        made = create_backup(env)
        assert [b.id for b in list_backups(env)] == [made.id]
    finally:
        subprocess.run(["umount", "-l", str(env.backups_path)], capture_output=True, timeout=30)


def test_stale_temp_of_dead_pid_is_cleaned_and_live_one_kept(tmp_path: Path, pg_database: str) -> None:
    env = _env(tmp_path, pg_database)
    env.backups_path.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    # Complete but for the rename (manifest written): the owner stays known beside the folder until
    # the rename, so a writer killed at that last moment is cleaned at once, not after an hour.
    for name, pid in ((".tmp-20200101T000000Z-dead", dead.pid), (".tmp-20200101T000000Z-live", os.getppid())):
        (env.backups_path / name / "database").mkdir(parents=True)
        (env.backups_path / f"{name}.owner").write_text(json.dumps({"pid": pid, "host": host}))
        (env.backups_path / name / "manifest.json").write_text("{}")
    (env.backups_path / ".tmp-20200101T000000Z-gone.owner").write_text("{}")  # its folder was renamed
    assert list_backups(env) == []
    info = create_backup(env)
    names = sorted(p.name for p in env.backups_path.iterdir())
    assert names == sorted([".tmp-20200101T000000Z-live", ".tmp-20200101T000000Z-live.owner", info.id])


@pytest.mark.parametrize("bad", ["../x", "a;rm -rf /", "", "x" * 200, ".hidden", "a/b", None])
def test_invalid_backup_ids_raise_input_error_and_write_nothing(tmp_path: Path, pg_database: str, bad: str) -> None:
    env = _env(tmp_path, pg_database)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for call in (get_backup, verify_backup, restore_backup):
        with pytest.raises(InputError) as excinfo:
            call(env, bad)
        assert "backup id" in str(excinfo.value)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not env.backups_path.exists()


def test_unknown_backup_id_and_bad_options(tmp_path: Path, pg_database: str) -> None:
    env = _env(tmp_path, pg_database)
    with pytest.raises(InputError, match="20990101T000000Z-abcd"):
        get_backup(env, "20990101T000000Z-abcd")
    with pytest.raises(InputError, match="20990101T000000Z-abcd"):
        restore_backup(env, "20990101T000000Z-abcd")
    for kwargs in ({"format": "tar"}, {"jobs": 0}, {"compression": 12}, {"label": "a\nb"}):
        with pytest.raises(InputError):
            create_backup(env, **kwargs)
    assert not env.backups_path.exists() or list(env.backups_path.iterdir()) == []


def test_secret_never_appears_in_errors(tmp_path: Path, pg_database: str, monkeypatch) -> None:
    secret = "S3cr3t-pw-7f2c9e41"
    monkeypatch.setenv("UO_TEST_DB_PASSWORD", secret)
    path = write_config(tmp_path, pg_database)
    # The database name carries the secret too, so the server's own error message would leak it
    # (the row counts' snapshot is opened first, then pg_dump runs in it).
    text = path.read_text().replace(
        f'name = "{pg_database}"', f'name = "{secret}"\npassword_env = "UO_TEST_DB_PASSWORD"'
    )
    path.write_text(text)
    env = load_settings(path).environment("staging")
    assert env.database.libpq_env()["PGPASSWORD"] == secret
    with pytest.raises(BackupError) as excinfo:
        create_backup(env)
    message = str(excinfo.value)
    assert "cannot open a snapshot of ***" in message and "does not exist" in message
    assert secret not in message
    assert list_backups(env) == [] and [p.name for p in env.backups_path.iterdir()] == []


def test_restore_failure_before_swap_leaves_database_untouched(tmp_path: Path, pg_database: str) -> None:
    env = _env(tmp_path, pg_database, backup_format="custom")
    _seed(env, 20)
    info = create_backup(env)
    _change_everything(env)
    rows = _rows(env)
    # A dump that pg_restore cannot read, with a manifest that matches it: checksums pass,
    # pg_restore fails, and the current database must be exactly as it was.
    dump = info.path / "database.dump"
    dump.write_bytes(b"PGDMP not really a dump")
    manifest = json.loads((info.path / "manifest.json").read_text())
    size, digest = hash_file(dump)
    manifest["files"]["database.dump"] = {"size": size, "sha256": digest}
    (info.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match="pg_restore"):
        restore_backup(env, info.id, safety_backup=False)
    assert _rows(env) == rows and "added_later" in _tables(env)
    assert env.env_file.read_bytes() != ENV_BYTES  # files untouched too
    with psycopg.connect(**PG, dbname="postgres") as conn:
        leftovers = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (pg_database + "\\_\\_%",)
        ).fetchall()
    assert leftovers == []


def test_state_file_outside_root_and_compose_file(tmp_path: Path, pg_database: str) -> None:
    env = _env(tmp_path, pg_database, extra='compose_file = "deploy/compose.yml"')
    compose = env.compose_file
    assert compose is not None
    compose.parent.mkdir(parents=True)
    compose.write_text("services: {}\n")
    _seed(env, 3)
    info = create_backup(env)
    with tarfile.open(info.path / "files.tar.gz") as tar:
        # Relative to the folder that holds backups/: the env file under its root's folder.
        assert sorted(tar.getnames()) == ["root/.env.staging", "root/deploy/compose.yml", "ultra_ops.toml"]
    # The manual procedure of the release document, literally, in that folder: `*` skips a
    # top-level dotfile, not one in a folder.
    env.env_file.write_bytes(b"ULTRA_VERSION=v9.9.9\n")
    compose.write_text("services: {changed: {}}\n")
    subprocess.run(
        f"mkdir -p rollback && tar -xzf backups/staging/{info.id}/files.tar.gz -C rollback/ && cp -r rollback/* ./",
        shell=True,
        cwd=tmp_path,
        check=True,
        timeout=30,
    )
    assert env.env_file.read_bytes() == ENV_BYTES and compose.read_text() == "services: {}\n"
    compose.write_text("services: {changed: {}}\n")
    config_before = env.config_file.read_bytes()
    env.config_file.write_text(textwrap.dedent(config_before.decode()) + "\n# edited\n")
    restore_backup(env, info.id, safety_backup=False)
    assert compose.read_text() == "services: {}\n"
    assert env.config_file.read_bytes() == config_before


def test_backup_with_members_named_relative_to_root_still_restores(tmp_path: Path, pg_database: str) -> None:
    """Backups written before the member names were relative to the deployment folder."""
    env = _env(tmp_path, pg_database)
    _seed(env, 3)
    info = create_backup(env)
    archive = info.path / "files.tar.gz"
    with tarfile.open(archive) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(archive, "w:gz") as tar:
        for member, data in members:
            member.name = member.name.removeprefix("root/")
            tar.addfile(member, io.BytesIO(data))
    manifest = json.loads((info.path / "manifest.json").read_text())
    size, digest = hash_file(archive)
    manifest["files"]["files.tar.gz"] = {"size": size, "sha256": digest}
    (info.path / "manifest.json").write_text(json.dumps(manifest))
    env.env_file.write_bytes(b"ULTRA_VERSION=v9.9.9\n")
    result = restore_backup(env, info.id, safety_backup=False)
    assert env.env_file.read_bytes() == ENV_BYTES and str(env.env_file) in result["files_restored"]


def test_long_pg_tool_runs_report_progress_and_fail_redacted(
    tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ultra_ops.engine.backups.dump import run_pg_tool
    from ultra_ops.engine.secrets import Redactor

    env = load_settings(write_config(tmp_path, pg_database)).environment("staging")
    beats: list[float] = []
    run_pg_tool(
        [sys.executable, "-c", "import time; time.sleep(0.5)"],
        env,
        app="test",
        redact=Redactor(),
        heartbeat=beats.append,
        every_s=0.1,
    )
    assert len(beats) >= 3 and beats == sorted(beats)
    with pytest.raises(BackupError) as info:
        run_pg_tool(
            [sys.executable, "-c", "import sys; sys.exit('bad password s3cr3t-value')"],
            env,
            app="test",
            redact=Redactor(["s3cr3t-value"]),
        )
    assert "exited 1" in str(info.value) and "s3cr3t-value" not in str(info.value)


def test_retention_keeps_the_newest(tmp_path: Path, pg_database: str) -> None:
    from ultra_ops.engine.backups.retention import prune_backups

    env = load_settings(write_config(tmp_path, pg_database)).environment("staging")
    made = [create_backup(env, label=f"n{i}", compression=0).id for i in range(4)]
    assert all(d.keep for d in prune_backups(env, keep=0))
    assert sorted(d.backup_id for d in prune_backups(env, keep=2) if not d.keep) == sorted(made[:2])
    assert [b.id for b in list_backups(env)] == made[:1:-1]
    assert sorted(os.listdir(env.backups_path)) == sorted(made[2:])  # nothing half-deleted left behind


def test_retention_counts_safety_backups_apart(tmp_path: Path, pg_database: str) -> None:
    """Rollbacks' safety backups never push out the backups taken on purpose."""
    from ultra_ops.engine.backups.retention import prune_backups
    from ultra_ops.engine.backups.store import SAFETY_LABEL

    env = load_settings(write_config(tmp_path, pg_database)).environment("staging")
    kept_on_purpose = [create_backup(env, label=label, compression=0).id for label in ("manual", "pre-deploy v1.0.0")]
    safety = [create_backup(env, label=f"{SAFETY_LABEL} x{i}", compression=0).id for i in range(3)]
    removed = [d.backup_id for d in prune_backups(env, keep=2) if not d.keep]
    assert removed == [safety[0]]
    assert {b.id for b in list_backups(env)} == {*kept_on_purpose, *safety[1:]}


def test_damaged_backups_are_listed_as_damaged(tmp_path: Path, pg_database: str, capsys) -> None:
    from ultra_ops.cli import main

    env = _env(tmp_path, pg_database)
    good = create_backup(env, compression=0)
    bad = create_backup(env, compression=0)
    (bad.path / "manifest.json").write_text("{not json")
    argv = ["backups", "list", "--environment", "staging", "--config", str(env.config_file)]
    assert main([*argv, "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[good.id]["status"] == "complete"
    assert rows[bad.id]["status"] == "damaged" and "manifest.json" in rows[bad.id]["reason"]
    assert main(argv) == 0
    assert f"{bad.id:<28} DAMAGED: " in capsys.readouterr().out


def _fake_backup(env: Environment, created: datetime, label: str = "nightly") -> str:
    """A backup folder with only its manifest: enough for listing and retention."""
    backup_id = created.strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(2).hex()
    folder = env.backups_path / backup_id
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "id": backup_id,
                "environment": env.name,
                "version": None,
                "created_at": created.isoformat(),
                "format": "custom",
                "label": label,
                "files": {},
            }
        )
    )
    return backup_id


@pytest.mark.unit
def test_retention_policy_over_a_simulated_year(tmp_path: Path) -> None:
    """One backup a day for a year, 7 daily / 4 weekly / 6 monthly: exactly those are kept, plus a
    pin and the backup the running release was deployed over; a dry run removes nothing."""
    from ultra_ops.engine.backups.retention import pin, prune_backups

    config = write_config(tmp_path, "unused_db", extra="")
    text = config.read_text().replace(
        'format = "directory"', 'format = "directory"\nretention = { daily = 7, weekly = 4, monthly = 6 }'
    )
    config.write_text(text)
    env = load_settings(config).environment("staging")
    first = datetime(2026, 1, 1, 1, 30, tzinfo=UTC)
    ids = {(first + timedelta(days=i)).date(): _fake_backup(env, first + timedelta(days=i)) for i in range(365)}
    pinned_id, deployed_over = ids[date(2026, 3, 17)], ids[date(2026, 6, 2)]
    pin(env, pinned_id)
    before = sorted(p.name for p in env.backups_path.iterdir())
    preview = prune_backups(env, protected={deployed_over}, dry_run=True)
    assert sorted(p.name for p in env.backups_path.iterdir()) == before

    last = date(2026, 12, 31)
    daily = {last - timedelta(days=i) for i in range(7)}
    # The newest day of each of the last 4 ISO weeks: 2026 has 53, Thursday the 31st opens W53.
    weekly = {date(2026, 12, 31), date(2026, 12, 27), date(2026, 12, 20), date(2026, 12, 13)}
    monthly = {date(2026, m, {12: 31, 11: 30, 10: 31, 9: 30, 8: 31, 7: 31}[m]) for m in range(7, 13)}
    expected = {ids[d] for d in daily | weekly | monthly} | {pinned_id, deployed_over}
    assert {d.backup_id for d in preview if d.keep} == expected
    reasons = {d.backup_id: d.why for d in preview}
    assert reasons[pinned_id] == "pinned" and "deployed over" in reasons[deployed_over]
    assert reasons[ids[date(2026, 2, 1)]] == "outside the retention policy"

    prune_backups(env, protected={deployed_over})
    assert {b.id for b in list_backups(env)} == expected
    assert not [p for p in env.backups_path.iterdir() if p.name.startswith(".tmp-")]


def test_backup_commands_pin_prune_and_verify(tmp_path: Path, pg_database: str, dagster_home: Path, capsys) -> None:
    from ultra_ops.cli import main

    env = _env(tmp_path, pg_database)
    made = [create_backup(env, label=f"n{i}", compression=0).id for i in range(3)]
    argv = ["--environment", "staging", "--config", str(env.config_file)]
    assert main(["backups", "pin", *argv, "--backup", made[0]]) == 0
    assert main(["backups", "pin", *argv, "--backup", "20990101T000000Z-dead"]) == 2
    capsys.readouterr()
    assert main(["backups", "prune", *argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"keep   {made[0]}: pinned" in out and f"keep   {made[2]}: the newest backup" in out
    assert len(list_backups(env)) == 3  # a dry run removes nothing
    config = env.config_file.read_text().replace('format = "directory"', 'format = "directory"\nkeep = 1')
    env.config_file.write_text(config)
    assert main(["backups", "prune", *argv]) == 0
    assert f"removed {made[1]}: outside the retention policy" in capsys.readouterr().out
    assert [b.id for b in list_backups(env)] == [made[2], made[0]]
    assert main(["backups", "unpin", *argv, "--backup", made[0]]) == 0
    assert main(["backups", "prune", *argv]) == 0
    assert [b.id for b in list_backups(env)] == [made[2]]
    capsys.readouterr()
    assert main(["backups", "verify", *argv]) == 0
    assert f"{made[2]}: ok" in capsys.readouterr().out
    dump = next(p for p in sorted((env.backups_path / made[2] / "database").iterdir()))
    dump.write_bytes(dump.read_bytes()[:-1] + bytes([dump.read_bytes()[-1] ^ 1]))
    assert main(["backups", "verify", *argv]) == 1
    assert "checksum mismatch in database/" in capsys.readouterr().err


def _older_tool(folder: Path, tool: str, major: int) -> None:
    """A `tool` first on PATH that reports an older PostgreSQL major and would fail any real work."""
    folder.mkdir(exist_ok=True)
    script = folder / tool
    script.write_text(
        f"#!/bin/sh\nif [ \"$1\" = --version ]; then echo '{tool} (PostgreSQL) {major}.9'; exit 0; fi\n"
        "echo 'must not run' >&2; exit 99\n"
    )
    script.chmod(0o755)


def _server_major(env: Environment) -> int:
    with _connect(env) as conn:
        return conn.info.server_version // 10000


def test_older_pg_dump_or_pg_restore_is_refused_at_once(
    tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env(tmp_path, pg_database)
    _seed(env)
    good = create_backup(env)
    major = _server_major(env)
    wrappers = tmp_path / "old_bin"
    monkeypatch.setenv("PATH", f"{wrappers}:{os.environ['PATH']}")

    _older_tool(wrappers, "pg_dump", major - 2)
    with pytest.raises(BackupError) as refused:
        create_backup(env)
    message = str(refused.value)
    assert f"pg_dump {major - 2}.9" in message and f"({major}." in message and "older than" in message
    assert [b.id for b in list_backups(env)] == [good.id]  # nothing half written
    assert not any(p.name.startswith(".") for p in env.backups_path.iterdir())

    (wrappers / "pg_dump").unlink()
    _older_tool(wrappers, "pg_restore", major - 1)
    _change_everything(env)
    before = _rows(env)
    with pytest.raises(BackupError) as refused:
        restore_backup(env, good.id, safety_backup=False)
    message = str(refused.value)
    assert f"pg_restore {major - 1}.9" in message and f"({major}." in message
    assert _rows(env) == before  # the database was not touched

    # The restore test refuses it too, before its scratch database exists.
    with pytest.raises(BackupError, match=f"pg_restore {major - 1}.9"):
        restore_test(env, good)
    with _connect(env) as conn:
        scratch = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (env.database.name + "%rtest%",)
        ).fetchall()
    assert scratch == []
