"""The configuration's model: frozen dataclasses for every environment and what it is made of.

Secrets are never values here: fields ending in `_env` name environment variables that hold them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ultra_ops.engine.calendar.settings import CalendarSettings
from ultra_ops.engine.inputs import validate_environment_name
from ultra_ops.engine.notify.settings import NotificationSettings
from ultra_ops.engine.release.checklist_settings import ChecklistSettings
from ultra_ops.engine.verify.settings import PerformanceSettings, SmokeSequence, WindowSettings
from ultra_ops.engine.versions import PROMOTION

CONFIG_ENV_VAR = "ULTRA_OPS_CONFIG"
DEFAULT_CONFIG_NAME = "ultra_ops.toml"
ENVIRONMENT_NAMES = PROMOTION  # a config names these environments, and no other
RUNTIMES = ("process", "compose")
BACKUP_FORMATS = ("directory", "custom")


@dataclass(frozen=True)
class ProcessSpec:
    """One local process of the process runtime (a Procfile line with a health URL)."""

    name: str
    command: tuple[str, ...]
    port: int | None = None
    health_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    stop_timeout_s: float = 10.0
    # The process's variable -> the variable of ours that holds its secret value (a password).
    secret_env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DatabaseSettings:
    host: str
    port: int
    name: str
    user: str
    password_env: str | None = None
    maintenance_db: str = "postgres"
    probe_queries: tuple[str, ...] = ("SELECT 1",)
    latency_budget_ms: float = 1000.0
    connect_timeout_s: float = 5.0  # every client ultra_ops starts: psycopg and the pg tools

    def libpq_connect_timeout(self, at_most: float | None = None) -> int:
        """libpq's connect_timeout: whole seconds, and anything below 2 counts as 2."""
        seconds = self.connect_timeout_s if at_most is None else min(self.connect_timeout_s, at_most)
        return max(2, math.ceil(seconds))

    def password(self) -> str | None:
        return os.environ.get(self.password_env) if self.password_env else None

    def conninfo(
        self,
        dbname: str | None = None,
        *,
        statement_timeout_s: float | None = None,
        lock_timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Keyword arguments for psycopg.connect; the password only comes from the environment.
        Always a connect timeout; statement and lock timeouts (server side) when given."""
        info: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": dbname or self.name,
            "user": self.user,
            "connect_timeout": self.libpq_connect_timeout(),
        }
        options = []
        if statement_timeout_s is not None:
            options.append(f"-c statement_timeout={max(1, int(statement_timeout_s * 1000))}")
        if lock_timeout_s is not None:
            options.append(f"-c lock_timeout={max(1, int(lock_timeout_s * 1000))}")
        if options:
            info["options"] = " ".join(options)
        pw = self.password()
        if pw:
            info["password"] = pw
        return info

    def libpq_env(self) -> dict[str, str]:
        """PG* variables for pg_dump/pg_restore/psql, so no secret is ever on a command line."""
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.name,
        }
        pw = self.password()
        if pw:
            env["PGPASSWORD"] = pw
        return env


@dataclass(frozen=True)
class RedisSettings:
    url: str
    username: str | None = None
    password_env: str | None = None

    def password(self) -> str | None:
        return os.environ.get(self.password_env) if self.password_env else None


@dataclass(frozen=True)
class EndpointCheck:
    """An HTTP endpoint that verification calls, with what it must answer and how fast."""

    name: str
    url: str
    method: str = "GET"
    expect_status: int = 200
    latency_budget_ms: float | None = None


@dataclass(frozen=True)
class LlmProvider:
    """An LLM provider whose model listing verification calls with the key from the environment."""

    name: str
    models_url: str
    api_key_env: str | None
    auth: str = "bearer"  # "bearer" (OpenAI style), "x-api-key" (Anthropic style) or "none" (a local stand-in)
    completion_url: str | None = None  # where performance verification may spend one small completion
    model: str | None = None
    completion_budget_ms: float | None = None


@dataclass(frozen=True)
class VerifySettings:
    timeout_s: float = 5.0
    retries: int = 2
    backoff_s: float = 0.5
    health_urls: tuple[str, ...] = ()
    endpoints: tuple[EndpointCheck, ...] = ()
    smoke: tuple[SmokeSequence, ...] = ()
    performance: PerformanceSettings | None = None
    window: WindowSettings = WindowSettings()


@dataclass(frozen=True)
class RetentionPolicy:
    """Keep the newest backup of each of the last `daily` days, `weekly` weeks, `monthly` months."""

    daily: int = 7
    weekly: int = 4
    monthly: int = 6


@dataclass(frozen=True)
class BackupSettings:
    format: str = "directory"
    jobs: int = 0  # 0: one per core
    compression: int = 1  # fast: pg_dump spends its time compressing, not reading
    keep: int = 20
    max_age_hours: float = 26.0  # the backup freshness sensor alerts past this age
    timeout_s: float = 6 * 3600.0  # the longest a pg_dump or pg_restore may run
    retention: RetentionPolicy | None = None  # None: the newest `keep`


@dataclass(frozen=True)
class Environment:
    name: str
    runtime: str
    root: Path  # where the environment's state files live (env file, compose file)
    env_file: Path
    backup_dir: Path  # backups of this environment live in backup_dir / name
    log_dir: Path
    state_dir: Path  # pid files, the lock, release records
    config_file: Path
    database: DatabaseSettings
    redis: RedisSettings | None
    verify: VerifySettings
    backup: BackupSettings
    processes: tuple[ProcessSpec, ...] = ()
    llm_providers: tuple[LlmProvider, ...] = ()
    compose_file: Path | None = None
    compose_project: str | None = None
    compose_command: tuple[str, ...] = ("docker", "compose")
    migrations_dir: Path | None = None
    test_command: tuple[str, ...] = ()
    required_env_keys: tuple[str, ...] = ()
    health_timeout_s: float = 60.0
    lock_wait_s: float = 0.0  # how long scheduled and UI runs wait for another operation's lock
    min_free_disk_mb: int = 100
    git_repo: Path | None = None  # where release tags are created; None: no tagging
    git_push: bool = False
    tag_releases: bool = False  # a successful deploy tags the release (production by default)
    shares_config: bool = False  # the config file names other environments too
    rollback_on_failed_verification: bool = False  # the failed verification sensor rolls back
    checklist: ChecklistSettings = ChecklistSettings()  # what the pre-release checklist checks and against what

    @property
    def backups_path(self) -> Path:
        return self.backup_dir / self.name

    def secret_env_names(self) -> list[str]:
        """Names of the environment variables that hold this environment's secrets."""
        names = [self.database.password_env]
        if self.redis:
            names.append(self.redis.password_env)
        names += [p.api_key_env for p in self.llm_providers]
        names += [name for spec in self.processes for name in spec.secret_env.values()]
        names += sorted({name for seq in self.verify.smoke for step in seq.steps for name in step.env_names()})
        return list(dict.fromkeys(n for n in names if n))

    def required_secret_env_names(self) -> list[str]:
        """The secret variables that must be set: not those a service only gets where they are
        (authentication off without its password) nor those of smoke steps skipped without them."""
        optional = {name for spec in self.processes for name in spec.secret_env.values()}
        optional |= {
            name for seq in self.verify.smoke for step in seq.steps if step.only_if_env for name in step.env_names()
        }
        needed = {
            name for seq in self.verify.smoke for step in seq.steps if not step.only_if_env for name in step.env_names()
        }
        return [n for n in self.secret_env_names() if n not in optional or n in needed]

    def state_files(self) -> list[Path]:
        """The files a backup carries besides the database: env file, compose file, config."""
        files = [self.env_file, self.config_file]
        if self.compose_file is not None:
            files.append(self.compose_file)
        return files

    def restored_files(self) -> list[Path]:
        """The state files a restore writes back: all but a config file that other environments
        share (a rollback of one environment must not rewrite the config the others run from)."""
        return [p for p in self.state_files() if not (self.shares_config and p == self.config_file)]

    def owned_paths(self) -> dict[str, Path]:
        """Config key -> the file or folder that belongs to this environment alone."""
        paths = {
            "env_file": self.env_file,
            "log_dir": self.log_dir,
            "state_dir": self.state_dir,
            "backup_dir": self.backups_path,
        }
        if self.compose_file is not None:
            paths["compose_file"] = self.compose_file
        return paths


@dataclass(frozen=True)
class Settings:
    path: Path
    timezone: str
    environments: dict[str, Environment]
    calendar: CalendarSettings = field(default_factory=CalendarSettings)
    notifications: NotificationSettings = field(default_factory=NotificationSettings)

    def environment(self, name: str) -> Environment:
        validate_environment_name(name, list(self.environments))
        return self.environments[name]
