"""Test databases: created empty on the test server, dropped with anything a restore renamed from them."""

from __future__ import annotations

import psycopg

from ultra_ops_tests.support.services import PG


def admin() -> psycopg.Connection:
    return psycopg.connect(**PG, dbname="postgres", autocommit=True)


def create_database(name: str) -> None:
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_databases(prefix: str) -> None:
    """Drop the database `prefix` and anything renamed from it (restores swap databases by name)."""
    with admin() as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",)).fetchall()
        for (db,) in rows:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
