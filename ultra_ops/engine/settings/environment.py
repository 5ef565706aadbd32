"""One environment: `[environments.<name>]`, what it runs on, where its files live, and its sections.

Paths are relative to the config file's folder (the env and compose files to the environment's
`root`); keys missing from an environment's table are taken from `[defaults]`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ultra_ops.engine.settings.backup import BackupSettings, read_backup
from ultra_ops.engine.settings.checklist import ChecklistSettings, read_checklist
from ultra_ops.engine.settings.database import DatabaseSettings, RedisSettings, read_database, read_redis
from ultra_ops.engine.settings.host import HostSettings, read_host
from ultra_ops.engine.settings.llm_providers import LlmProvider, read_llm_providers
from ultra_ops.engine.settings.processes import ProcessSpec, read_processes
from ultra_ops.engine.settings.table import ENV_VAR_NAME, TableReader, expand_command, resolve_path
from ultra_ops.engine.settings.verify import VerifySettings, read_verify

RUNTIMES = ("process", "compose")
# Docker Compose project names: lowercase letters, digits, '_' and '-', starting with a letter or digit.
_COMPOSE_PROJECT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


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
    # Variables `ultra-ops init` writes into a compose environment's env file where missing (image
    # names, ...): settings of the compose file that are not secrets.
    compose_env: tuple[tuple[str, str], ...] = ()
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
    timezone: str = "UTC"  # the config's: every time shown to an operator is in it (records keep UTC)
    host: HostSettings | None = None  # the machine it lives on, reached over SSH; None: this one
    # Never from the config: set by hosts/reach.py on the environment as this machine reaches it,
    # each tunnel's local port -> the host and port the config wrote there ("localhost:8443"),
    # whose name an HTTP client keeps for TLS and the Host header (hosts/names.py).
    reached_from: tuple[tuple[int, str], ...] = ()

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


def read_environment(
    path: Path,
    name: str,
    table: dict[str, Any],
    defaults: dict[str, Any],
    *,
    shares_config: bool = False,
    timezone: str = "UTC",
) -> Environment:
    merged = {**defaults, **table}
    r = TableReader(path, merged, f"environments.{name}")
    base = path.parent
    runtime = r.get("runtime", str, "process")
    if runtime not in RUNTIMES:
        raise r.fail("runtime", f"expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    root = resolve_path(base, r.get("root", str, "."))
    compose_file = r.get("compose_file", str, None)
    git_repo = r.get("git_repo", str, None)
    migrations = r.get("migrations", str, None)
    processes = read_processes(r.sub("processes"))
    if runtime == "process" and not processes:
        raise r.fail("processes", "the process runtime needs at least one process")
    if runtime == "compose" and compose_file is None:
        raise r.fail("compose_file", "the compose runtime needs a compose file")
    host = read_host(r.sub("host"), base, name)
    if host is not None and runtime != "compose":
        raise r.fail("host", 'an environment on a host of its own runs under the compose runtime (runtime = "compose")')
    database = r.sub("database", required=True)
    redis = r.sub("redis")
    env_file = resolve_path(root, r.get("env_file", str, f".env.{name}"))
    env = Environment(
        name=name,
        runtime=runtime,
        root=root,
        env_file=env_file,
        backup_dir=resolve_path(base, r.get("backup_dir", str, "backups")),
        log_dir=resolve_path(base, r.get("log_dir", str, f"logs/{name}")),
        state_dir=resolve_path(base, r.get("state_dir", str, f"state/{name}")),
        config_file=path,
        database=read_database(database, env_file),  # type: ignore[arg-type]
        redis=read_redis(redis, env_file) if redis else None,
        verify=read_verify(r.sub("verify")),
        backup=read_backup(r.sub("backup")),
        processes=processes,
        llm_providers=read_llm_providers(r),
        compose_file=resolve_path(root, compose_file) if compose_file else None,
        compose_project=_compose_project(r, name),
        compose_command=r.string_list("compose_command", ("docker", "compose")),
        compose_env=_compose_env(r),
        migrations_dir=resolve_path(base, migrations) if migrations else None,
        test_command=expand_command(r.string_list("test_command")),
        required_env_keys=r.string_list("required_env_keys"),
        health_timeout_s=float(r.positive("health_timeout_s", 60.0, at_most=3600, unit=" seconds")),
        lock_wait_s=float(r.positive("lock_wait_s", 0.0, at_most=86400, unit=" seconds (a day)")),
        min_free_disk_mb=r.positive("min_free_disk_mb", 100, integer=True, at_most=1_000_000_000, unit=" MB"),
        git_repo=resolve_path(base, git_repo) if git_repo else None,
        git_push=r.get("git_push", bool, False),
        tag_releases=r.get("tag_releases", bool, name == "production"),
        shares_config=shares_config,
        rollback_on_failed_verification=r.get("rollback_on_failed_verification", bool, False),
        checklist=read_checklist(r.sub("checklist"), base),
        timezone=timezone,
        host=host,
    )
    r.finish()
    return env


def _compose_project(r: TableReader, environment: str) -> str:
    value = r.get("compose_project", str, f"ultra-{environment}")
    if not _COMPOSE_PROJECT.fullmatch(value):
        raise r.fail(
            "compose_project", f"{value!r} is not a compose project name (lowercase letters, digits, '_' and '-')"
        )
    return value


# Names that would carry a secret: those belong in the env file alone, never in the config.
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$", re.I)


def _compose_env(r: TableReader) -> tuple[tuple[str, str], ...]:
    table = r.get("compose_env", dict, {})
    for key, value in table.items():
        if not ENV_VAR_NAME.fullmatch(key) or not isinstance(value, str):
            raise r.fail(f"compose_env.{key}", 'expected NAME = "value" (a variable name and a string)')
        if _SECRET_NAME.search(key):
            raise r.fail(f"compose_env.{key}", "names a secret: secrets belong in the env file, not the config")
    return tuple(sorted(table.items()))
