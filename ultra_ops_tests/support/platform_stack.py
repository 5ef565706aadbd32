"""The production platform of `./dev platform` started for a test module: code server, webserver and
daemon on a PostgreSQL database of the module's own, free ports, the ultra_ops environments of a
test config (development and staging, each with its own database, Redis prefix, port and folders)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from ultra_ops.cli import main
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.settings import load_settings
from ultra_ops.platform.stack import Platform
from ultra_ops_tests.support.cli import run_cli
from ultra_ops_tests.support.configs import write_multi_config
from ultra_ops_tests.support.databases import create_database, drop_databases
from ultra_ops_tests.support.ports import free_port
from ultra_ops_tests.support.services import PG, REDIS_URL
from ultra_ops_tests.support.webserver import UI

ENVIRONMENTS = ("development", "staging")


@dataclass
class RunningPlatform:
    platform: Platform
    config: Path
    ui: UI

    def ops(self, *argv: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """The ultra-ops CLI as an operator on the platform's host runs it: recorded on the same instance."""
        return run_cli(*argv, config=self.config, env=self.platform.env(), timeout=timeout)


@contextmanager
def running_platform(
    tmp: Path, *, test_seconds: float = 0, extra_config: str = "", environments: tuple[str, ...] = ENVIRONMENTS
) -> Iterator[RunningPlatform]:
    base = f"uo_test_{uuid.uuid4().hex[:12]}"
    prefix = f"uo_test:{uuid.uuid4().hex[:12]}:"
    databases = {env: f"{base}_{env[:4]}" for env in environments}
    platform = Platform(
        home=tmp / "dagster_home",
        database=f"{base}_dagster",
        port=free_port(),
        code_port=free_port(),
        pg_user=PG["user"],
    )
    try:
        for name in databases.values():
            create_database(name)
        config = write_multi_config(tmp, databases, redis_prefix=prefix)
        if test_seconds:
            # A deploy's tests take this long: enough to see which runs overlap, also on a loaded machine.
            slow = f'test_command = ["{sys.executable}", "-c", "import time; time.sleep({test_seconds})"]\n'
            config.write_text(config.read_text().replace("[defaults]\n", "[defaults]\n" + slow, 1))
        if extra_config:
            config.write_text(config.read_text() + extra_config)
        platform.extra_env = {"ULTRA_OPS_CONFIG": str(config)}
        running = RunningPlatform(platform, config, UI(platform.port))
        for env in environments:  # not a Dagster run: in this process
            assert main(["init", "--environment", env, "--config", str(config)]) == 0
        platform.start()
        yield running
    finally:
        platform.stop()
        if (tmp / "ultra_ops.toml").exists():
            settings = load_settings(tmp / "ultra_ops.toml")
            for env in environments:
                get_runtime(settings.environment(env)).down()
        drop_databases(base)
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
