"""One test's environment running the sample service: config, folders, database and port."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import psycopg

from ultra_ops.cli import main
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.configs import write_config
from ultra_ops_tests.support.ports import free_port
from ultra_ops_tests.support.services import PG, SAMPLE_MIGRATIONS


class Stack:
    """One test's environment: config, folders, database and the sample service's port."""

    def __init__(self, tmp_path: Path, database: str, *, extra: str = "", verify_extra: str = "") -> None:
        self.tmp = tmp_path
        self.database = database
        self.port = free_port()
        self.migrations = tmp_path / "migrations"
        shutil.copytree(SAMPLE_MIGRATIONS, self.migrations)
        api = f"http://127.0.0.1:{self.port}/api/v1/prompts"
        verify_extra = f'endpoints = [{{ name = "prompts", url = "{api}", expect_status = 200 }}]\n' + verify_extra
        self.config = write_config(
            tmp_path, database, port=self.port, migrations=self.migrations, extra=extra, verify_extra=verify_extra
        )
        self.env = load_settings(self.config).environment("staging")
        self.env.env_file.write_text("ULTRA_FEATURE_FLAGS=search\nULTRA_VERSION=\n")
        self.env.env_file.chmod(0o600)

    def ops(self, *argv: str) -> int:
        return main([*argv, "--environment", "staging", "--config", str(self.config)])

    def rows(self) -> list[tuple]:
        with psycopg.connect(**PG, dbname=self.database) as conn:
            return conn.execute("SELECT id, title FROM prompts ORDER BY id").fetchall()

    def tables(self) -> set[str]:
        with psycopg.connect(**PG, dbname=self.database) as conn:
            rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        return {r[0] for r in rows}

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)

    def stop(self) -> None:
        get_runtime(self.env).down()
