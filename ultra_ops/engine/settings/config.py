"""The configuration file: one TOML file naming every environment, read into Settings.

Secrets are never values here: keys ending in `_env` name environment variables that hold them.
Paths are relative to the config file's folder. Any mistake raises ConfigError naming the file,
the key and the reason, before anything runs.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ultra_ops.engine.errors import ConfigError
from ultra_ops.engine.inputs import validate_environment_name
from ultra_ops.engine.paths import REPOSITORY_ROOT
from ultra_ops.engine.settings.calendar import CalendarSettings, read_calendar
from ultra_ops.engine.settings.environment import Environment, read_environment
from ultra_ops.engine.settings.notifications import NotificationSettings, read_notifications
from ultra_ops.engine.settings.ports import check_ports
from ultra_ops.engine.settings.table import TableReader
from ultra_ops.engine.versions import PROMOTION

CONFIG_ENV_VAR = "ULTRA_OPS_CONFIG"
DEFAULT_CONFIG_NAME = "ultra_ops.toml"
ENVIRONMENT_NAMES = PROMOTION  # a config names these environments, and no other


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


def default_config_path() -> Path:
    """`ULTRA_OPS_CONFIG`, else ultra_ops.toml in the current folder, else the repository's."""
    explicit = os.environ.get(CONFIG_ENV_VAR)
    if explicit:
        return Path(explicit)
    here = Path.cwd() / DEFAULT_CONFIG_NAME
    if here.exists():
        return here
    return REPOSITORY_ROOT / DEFAULT_CONFIG_NAME


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


def _check_host_roots(path: Path, envs: dict[str, Environment]) -> None:
    """Two environments on one host must not share its folder: one's deploy would overwrite the
    other's env file and compose file there."""
    seen: dict[tuple[str, str], str] = {}
    for env in envs.values():
        if env.host is None:
            continue
        where = (env.host.address, str(env.host.root))
        if where in seen:
            raise ConfigError(
                path,
                f"environments.{env.name}.host.root",
                f"{env.host.root} on {env.host.address} is {seen[where]}'s too; environments must not share files",
            )
        seen[where] = env.name


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
    top = TableReader(p, data, "")
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
        envs[name] = read_environment(p, name, table, defaults, shares_config=len(environments) > 1, timezone=timezone)
    _check_isolation(p, envs)
    _check_host_roots(p, envs)
    check_ports(p, envs)
    return Settings(path=p, timezone=timezone, environments=envs, calendar=calendar, notifications=notifications)
