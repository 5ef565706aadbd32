"""Migrations against a real PostgreSQL database."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import psycopg
import pytest

from ultra_ops.engine.errors import OperationError
from ultra_ops.engine.release.migrate import apply_migrations, pending_migrations
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Environment, load_settings
from ultra_ops_tests.support.configs import write_config
from ultra_ops_tests.support.services import PG, SAMPLE_MIGRATIONS


def _env(tmp_path: Path, database: str, migrations: Path) -> Environment:
    return load_settings(write_config(tmp_path, database, migrations=migrations)).environment("staging")


def _query(database: str, sql: str) -> list[tuple]:
    with psycopg.connect(**PG, dbname=database) as conn:
        return conn.execute(sql).fetchall()


def _tables(database: str) -> set[str]:
    return {r[0] for r in _query(database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_applies_in_order_and_is_idempotent(tmp_path: Path, pg_database: str) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    # Written out of order: the name decides, 0002 depends on 0001.
    (folder / "0002_items.sql").write_text("CREATE TABLE items (id int REFERENCES things(id));")
    (folder / "0001_things.sql").write_text(
        "CREATE TABLE things (id int PRIMARY KEY);\nINSERT INTO things VALUES (1), (2);"
    )
    env = _env(tmp_path, pg_database, folder)

    assert pending_migrations(env) == ["0001_things.sql", "0002_items.sql"]
    assert apply_migrations(env) == ["0001_things.sql", "0002_items.sql"]
    assert pending_migrations(env) == []
    assert apply_migrations(env) == []
    rows = _query(pg_database, "SELECT version FROM schema_migrations ORDER BY applied_at, version")
    assert [r[0] for r in rows] == ["0001_things.sql", "0002_items.sql"]
    assert _query(pg_database, "SELECT count(*) FROM things") == [(2,)]

    (folder / "0003_more.sql").write_text("INSERT INTO things VALUES (3);")
    assert pending_migrations(env) == ["0003_more.sql"]
    assert apply_migrations(env) == ["0003_more.sql"]
    assert _query(pg_database, "SELECT count(*) FROM things") == [(3,)]


def test_failing_migration_rolls_back_only_itself(tmp_path: Path, pg_database: str) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_ok.sql").write_text("CREATE TABLE kept (id int);")
    # The first statement would succeed on its own: the whole file must be undone.
    (folder / "0002_broken.sql").write_text("CREATE TABLE half_done (id int);\nSELECT * FROM no_such_table;")
    (folder / "0003_never.sql").write_text("CREATE TABLE never (id int);")
    env = _env(tmp_path, pg_database, folder)

    with pytest.raises(OperationError) as info:
        apply_migrations(env)
    message = str(info.value)
    assert "0002_broken.sql" in message and "no_such_table" in message
    assert _tables(pg_database) == {"kept", "schema_migrations"}
    assert [r[0] for r in _query(pg_database, "SELECT version FROM schema_migrations")] == ["0001_ok.sql"]
    assert pending_migrations(env) == ["0002_broken.sql", "0003_never.sql"]

    (folder / "0002_broken.sql").write_text("CREATE TABLE half_done (id int);")
    assert apply_migrations(env) == ["0002_broken.sql", "0003_never.sql"]


def test_error_is_redacted(tmp_path: Path, pg_database: str) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_leak.sql").write_text("SELECT * FROM table_s3cr3tvalue;")
    env = _env(tmp_path, pg_database, folder)
    with pytest.raises(OperationError) as info:
        apply_migrations(env, redact=Redactor(["s3cr3tvalue"]))
    assert "s3cr3tvalue" not in str(info.value) and "0001_leak.sql" in str(info.value)


def test_bad_file_name_is_an_error(tmp_path: Path, pg_database: str) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_ok.sql").write_text("CREATE TABLE t (id int);")
    (folder / "2_bad name.sql").write_text("CREATE TABLE u (id int);")
    env = _env(tmp_path, pg_database, folder)
    with pytest.raises(OperationError, match="2_bad name.sql"):
        apply_migrations(env)
    assert _tables(pg_database) == set()  # checked before anything ran


def test_no_migrations_dir(tmp_path: Path, pg_database: str) -> None:
    env = dataclasses.replace(_env(tmp_path, pg_database, SAMPLE_MIGRATIONS), migrations_dir=None)
    assert apply_migrations(env) == []
    assert pending_migrations(env) == []


def test_sample_service_migrations(tmp_path: Path, pg_database: str) -> None:
    env = _env(tmp_path, pg_database, SAMPLE_MIGRATIONS)
    assert apply_migrations(env) == ["0001_init.sql"]
    assert _query(pg_database, "SELECT count(*) > 0 FROM prompts") == [(True,)]
