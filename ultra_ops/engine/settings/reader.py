"""The configuration file: one TOML file naming every environment, read into the settings model.

Secrets are never values here: keys ending in `_env` name environment variables that hold them.
Paths are relative to the config file's folder. Any mistake raises ConfigError naming the file,
the key and the reason, before anything runs.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ultra_ops.engine.calendar.settings import read_calendar
from ultra_ops.engine.errors import ConfigError
from ultra_ops.engine.notify.settings import read_notifications
from ultra_ops.engine.release.checklist_settings import read_checklist
from ultra_ops.engine.settings.model import (
    BACKUP_FORMATS,
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_NAME,
    ENVIRONMENT_NAMES,
    RUNTIMES,
    BackupSettings,
    DatabaseSettings,
    EndpointCheck,
    Environment,
    LlmProvider,
    ProcessSpec,
    RedisSettings,
    RetentionPolicy,
    Settings,
    VerifySettings,
)
from ultra_ops.engine.verify.settings import read_performance, read_smoke, read_window


def default_config_path() -> Path:
    """`ULTRA_OPS_CONFIG`, else ultra_ops.toml in the current folder, else the repository's."""
    explicit = os.environ.get(CONFIG_ENV_VAR)
    if explicit:
        return Path(explicit)
    here = Path.cwd() / DEFAULT_CONFIG_NAME
    if here.exists():
        return here
    return Path(__file__).resolve().parents[3] / DEFAULT_CONFIG_NAME


class _Reader:
    """Typed access to one TOML table; every error names the full dotted key."""

    def __init__(self, path: Path, table: dict[str, Any], prefix: str) -> None:
        self.path, self.table, self.prefix = path, table, prefix
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, reason: str) -> ConfigError:
        return ConfigError(self.path, self.key(name), reason)

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = ..., *, required: bool = False) -> Any:
        self.used.add(name)
        if name not in self.table:
            if required or default is ...:
                raise self.fail(name, "is required")
            return default
        value = self.table[name]
        # bool is an int in Python; a port of `true` is still wrong.
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.fail(name, f"expected {_kind_name(kind)}, got a boolean")
        if not isinstance(value, kind):
            raise self.fail(name, f"expected {_kind_name(kind)}, got {type(value).__name__}")
        # TOML has inf and nan; no duration, budget or count of ours means either.
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(name, f"must be a finite number, got {value}")
        return value

    def string_list(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(name, list, list(default))
        if not all(isinstance(v, str) for v in value):
            raise self.fail(name, "expected a list of strings")
        return tuple(value)

    def sub(self, name: str, *, required: bool = False) -> _Reader | None:
        value = self.get(name, dict, None, required=required)
        return None if value is None else _Reader(self.path, value, self.key(name))

    def positive(self, name: str, default: float, *, integer: bool = False) -> Any:
        value = self.get(name, int if integer else (int, float), default)
        if value < 0:
            raise self.fail(name, "must not be negative")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown key")


def _above_zero(r: _Reader, name: str, default: float) -> float:
    value = float(r.positive(name, default))
    if value == 0:
        raise r.fail(name, "must be greater than 0")
    return value


def _compose_project(r: _Reader, environment: str) -> str:
    value = r.get("compose_project", str, f"ultra-{environment}")
    if not _COMPOSE_PROJECT.fullmatch(value):
        raise r.fail(
            "compose_project", f"{value!r} is not a compose project name (lowercase letters, digits, '_' and '-')"
        )
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


_ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PROCESS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# Docker Compose project names: lowercase letters, digits, '_' and '-', starting with a letter or digit.
_COMPOSE_PROJECT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def _env_var_name(r: _Reader, name: str) -> str | None:
    value = r.get(name, str, None)
    if value is not None and not _ENV_VAR_NAME.fullmatch(value):
        raise r.fail(name, "must name an environment variable (letters, digits and '_'), not hold a value")
    return value


def _path(base: Path, value: str) -> Path:
    return (base / os.path.expandvars(value)).resolve() if not os.path.isabs(value) else Path(value)


def _url(r: _Reader, name: str, *, required: bool = True, default: str | None = None) -> str | None:
    value = r.get(name, str, default, required=required)
    if value is not None and not value.startswith(("http://", "https://")):
        raise r.fail(name, f"expected an http:// or https:// URL, got {value!r}")
    return value


def _expand_command(command: tuple[str, ...]) -> tuple[str, ...]:
    # "{python}" lets a checked-in config start the same interpreter that runs ultra_ops.
    return tuple(part.replace("{python}", sys.executable) for part in command)


def _database(r: _Reader) -> DatabaseSettings:
    port = r.get("port", int, 5432)
    if not 0 < port < 65536:
        raise r.fail("port", f"{port} is not a TCP port")
    db = DatabaseSettings(
        host=r.get("host", str, "127.0.0.1"),
        port=port,
        name=r.get("name", str, required=True),
        user=r.get("user", str, "postgres"),
        password_env=_env_var_name(r, "password_env"),
        maintenance_db=r.get("maintenance_db", str, "postgres"),
        probe_queries=r.string_list("probe_queries", ("SELECT 1",)),
        latency_budget_ms=float(r.positive("latency_budget_ms", 1000.0)),
        connect_timeout_s=_above_zero(r, "connect_timeout_s", 5.0),
    )
    r.finish()
    return db


def _redis(r: _Reader) -> RedisSettings:
    url = r.get("url", str, required=True)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise r.fail("url", f"expected a redis:// URL, got {url!r}")
    if "@" in url:
        raise r.fail("url", "must not carry credentials: name them with username and password_env")
    settings = RedisSettings(
        url=url, username=r.get("username", str, None), password_env=_env_var_name(r, "password_env")
    )
    r.finish()
    return settings


def _verify(r: _Reader | None) -> VerifySettings:
    if r is None:
        return VerifySettings()
    endpoints = []
    for i, item in enumerate(r.get("endpoints", list, [])):
        if not isinstance(item, dict):
            raise r.fail(f"endpoints[{i}]", "expected a table")
        e = _Reader(r.path, item, r.key(f"endpoints[{i}]"))
        status = e.get("expect_status", int, 200)
        if not 100 <= status <= 599:
            raise e.fail("expect_status", f"{status} is not an HTTP status")
        budget = e.get("latency_budget_ms", (int, float), None)
        endpoints.append(
            EndpointCheck(
                name=e.get("name", str, required=True),
                url=_url(e, "url"),
                method=e.get("method", str, "GET").upper(),
                expect_status=status,
                latency_budget_ms=float(budget) if budget is not None else None,
            )
        )
        e.finish()
    health = r.string_list("health_urls")
    for i, url in enumerate(health):
        if not url.startswith(("http://", "https://")):
            raise r.fail(f"health_urls[{i}]", f"expected an http:// or https:// URL, got {url!r}")
    timeout_s = _above_zero(r, "timeout_s", 5.0)
    settings = VerifySettings(
        timeout_s=timeout_s,
        retries=r.positive("retries", 2, integer=True),
        backoff_s=float(r.positive("backoff_s", 0.5)),
        health_urls=health,
        endpoints=tuple(endpoints),
        smoke=read_smoke(r.sub("smoke"), _url),
        performance=read_performance(r.sub("performance"), _url),
        window=read_window(r.sub("window")),
    )
    r.finish()
    return settings


def _retention(r: _Reader | None) -> RetentionPolicy | None:
    if r is None:
        return None
    tiers = {
        name: r.positive(name, default, integer=True) for name, default in (("daily", 7), ("weekly", 4), ("monthly", 6))
    }
    for name, count in tiers.items():
        if count > 1000:
            raise r.fail(name, f"at most 1000, got {count}")
    r.finish()
    return RetentionPolicy(**tiers)


def _backup(r: _Reader | None) -> BackupSettings:
    if r is None:
        return BackupSettings()
    fmt = r.get("format", str, "directory")
    if fmt not in BACKUP_FORMATS:
        raise r.fail("format", f"expected one of {', '.join(BACKUP_FORMATS)}, got {fmt!r}")
    compression = r.get("compression", int, 1)
    if not 0 <= compression <= 9:
        raise r.fail("compression", "expected 0 (none) to 9")
    max_age = float(r.positive("max_age_hours", 26.0))
    if not 0 < max_age < 24 * 366:
        raise r.fail("max_age_hours", f"expected more than 0 and less than a year, got {max_age:g}")
    settings = BackupSettings(
        format=fmt,
        jobs=r.positive("jobs", 0, integer=True),
        compression=compression,
        keep=r.positive("keep", 20, integer=True),
        max_age_hours=max_age,
        timeout_s=_above_zero(r, "timeout_s", 6 * 3600.0),
        retention=_retention(r.sub("retention")),
    )
    r.finish()
    return settings


def _processes(r: _Reader | None) -> tuple[ProcessSpec, ...]:
    if r is None:
        return ()
    specs = []
    for name in r.table:
        if not _PROCESS_NAME.fullmatch(name):
            # The name becomes file names (<name>.pid, <name>.out): one plain path component.
            raise r.fail(name, "is not a valid process name (letters, digits, '_' and '-', at most 64)")
        p = r.sub(name)
        assert p is not None
        command = p.string_list("command")
        if not command:
            raise p.fail("command", "must name a program and its arguments")
        port = p.get("port", int, None)
        if port is not None and not 0 < port < 65536:
            raise p.fail("port", f"{port} is not a TCP port")
        env = p.get("env", dict, {})
        for k, v in env.items():
            if not _ENV_VAR_NAME.fullmatch(k):
                raise p.fail(f"env.{k}", "is not a valid environment variable name")
            if not isinstance(v, str):
                raise p.fail(f"env.{k}", "expected a string")
        secret_env = p.get("secret_env", dict, {})
        for k, v in secret_env.items():
            if not _ENV_VAR_NAME.fullmatch(k):
                raise p.fail(f"secret_env.{k}", "is not a valid environment variable name")
            if not isinstance(v, str) or not _ENV_VAR_NAME.fullmatch(v):
                raise p.fail(f"secret_env.{k}", "must name the environment variable that holds the value")
        specs.append(
            ProcessSpec(
                name=name,
                command=_expand_command(command),
                port=port,
                health_url=_url(p, "health_url", required=False),
                env=dict(env),
                stop_timeout_s=float(p.positive("stop_timeout_s", 10.0)),
                secret_env=dict(secret_env),
            )
        )
        p.finish()
    return tuple(specs)


def _llm_providers(r: _Reader) -> tuple[LlmProvider, ...]:
    providers = []
    for i, item in enumerate(r.get("llm_providers", list, [])):
        if not isinstance(item, dict):
            raise r.fail(f"llm_providers[{i}]", "expected a table")
        p = _Reader(r.path, item, r.key(f"llm_providers[{i}]"))
        auth = p.get("auth", str, "bearer")
        if auth not in ("bearer", "x-api-key", "none"):
            raise p.fail("auth", f"expected 'bearer', 'x-api-key' or 'none', got {auth!r}")
        key_env = _env_var_name(p, "api_key_env")
        if key_env is None and auth != "none":
            raise p.fail("api_key_env", "is required")
        budget = p.get("completion_budget_ms", (int, float), None)
        if budget is not None and budget <= 0:
            raise p.fail("completion_budget_ms", "must be greater than 0")
        providers.append(
            LlmProvider(
                name=p.get("name", str, required=True),
                models_url=_url(p, "models_url"),
                api_key_env=key_env,
                auth=auth,
                completion_url=_url(p, "completion_url", required=False),
                model=p.get("model", str, None),
                completion_budget_ms=float(budget) if budget is not None else None,
            )
        )
        p.finish()
    return tuple(providers)


def _checklist(r: _Reader | None, base: Path):  # noqa: ANN202 - ChecklistSettings
    settings = read_checklist(r, base)
    return replace(settings, dependency_scan=_expand_command(settings.dependency_scan))


def _environment(
    path: Path, name: str, table: dict[str, Any], defaults: dict[str, Any], *, shares_config: bool = False
) -> Environment:
    merged = {**defaults, **table}
    r = _Reader(path, merged, f"environments.{name}")
    base = path.parent
    runtime = r.get("runtime", str, "process")
    if runtime not in RUNTIMES:
        raise r.fail("runtime", f"expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    root = _path(base, r.get("root", str, "."))
    compose_file = r.get("compose_file", str, None)
    git_repo = r.get("git_repo", str, None)
    migrations = r.get("migrations", str, None)
    processes = _processes(r.sub("processes"))
    if runtime == "process" and not processes:
        raise r.fail("processes", "the process runtime needs at least one process")
    if runtime == "compose" and compose_file is None:
        raise r.fail("compose_file", "the compose runtime needs a compose file")
    database = r.sub("database", required=True)
    redis = r.sub("redis")
    env = Environment(
        name=name,
        runtime=runtime,
        root=root,
        env_file=_path(root, r.get("env_file", str, f".env.{name}")),
        backup_dir=_path(base, r.get("backup_dir", str, "backups")),
        log_dir=_path(base, r.get("log_dir", str, f"logs/{name}")),
        state_dir=_path(base, r.get("state_dir", str, f"state/{name}")),
        config_file=path,
        database=_database(database),  # type: ignore[arg-type]
        redis=_redis(redis) if redis else None,
        verify=_verify(r.sub("verify")),
        backup=_backup(r.sub("backup")),
        processes=processes,
        llm_providers=_llm_providers(r),
        compose_file=_path(root, compose_file) if compose_file else None,
        compose_project=_compose_project(r, name),
        compose_command=r.string_list("compose_command", ("docker", "compose")),
        migrations_dir=_path(base, migrations) if migrations else None,
        test_command=_expand_command(r.string_list("test_command")),
        required_env_keys=r.string_list("required_env_keys"),
        health_timeout_s=float(r.positive("health_timeout_s", 60.0)),
        lock_wait_s=float(r.positive("lock_wait_s", 0.0)),
        min_free_disk_mb=r.positive("min_free_disk_mb", 100, integer=True),
        git_repo=_path(base, git_repo) if git_repo else None,
        git_push=r.get("git_push", bool, False),
        tag_releases=r.get("tag_releases", bool, name == "production"),
        shares_config=shares_config,
        rollback_on_failed_verification=r.get("rollback_on_failed_verification", bool, False),
        checklist=_checklist(r.sub("checklist"), base),
    )
    r.finish()
    return env


def _overlap(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def _check_isolation(path: Path, envs: dict[str, Environment]) -> None:
    """Nothing of one environment may be in another's files or folders: a restore, a retention
    run or a log rotation of one environment would otherwise touch the other's state."""
    seen: list[tuple[str, str, Path]] = []
    for env in envs.values():
        for key, p in env.owned_paths().items():
            for other, other_key, q in seen:
                if _overlap(p, q):
                    how = "is" if p == q else ("is inside" if q in p.parents else "contains")
                    raise ConfigError(
                        path,
                        f"environments.{env.name}.{key}",
                        f"{p} {how} {other}'s {other_key} ({q}); environments must not share files or folders",
                    )
        seen += [(env.name, key, p) for key, p in env.owned_paths().items()]


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read and check the whole config file; raise ConfigError on the first problem."""
    p = Path(path) if path is not None else default_config_path()
    p = p.resolve()
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(p, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(p, "", f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(p, "", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(p, "", f"not valid TOML: {exc}") from None
    top = _Reader(p, data, "")
    timezone = top.get("timezone", str, "UTC")
    try:
        ZoneInfo(timezone)
    except (ValueError, ZoneInfoNotFoundError):
        raise top.fail("timezone", f"{timezone!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
    calendar = read_calendar(top.sub("calendar"))
    notifications = read_notifications(top.sub("notifications"))
    defaults = top.get("defaults", dict, {})
    environments = top.get("environments", dict, required=True)
    top.finish()
    if not environments:
        raise ConfigError(p, "environments", "names no environment")
    envs: dict[str, Environment] = {}
    for name, table in environments.items():
        if name not in ENVIRONMENT_NAMES:
            raise ConfigError(
                p, f"environments.{name}", f"unknown environment; expected one of {', '.join(ENVIRONMENT_NAMES)}"
            )
        if not isinstance(table, dict):
            raise ConfigError(p, f"environments.{name}", "expected a table")
        envs[name] = _environment(p, name, table, defaults, shares_config=len(environments) > 1)
    _check_isolation(p, envs)
    return Settings(path=p, timezone=timezone, environments=envs, calendar=calendar, notifications=notifications)
