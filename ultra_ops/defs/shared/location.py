"""The config as the code location reads it: the one route for schedules, sensors and job
definitions. Runs read theirs through the `settings` resource instead, once per run.

The file is the operator's choice (`ULTRA_OPS_CONFIG`, else ./ultra_ops.toml). It is read again
only when it changed: every domain asks while the code location loads, and every tick asks again.
"""

from __future__ import annotations

from dagster import SkipReason

from ultra_ops.engine.errors import UltraOpsError
from ultra_ops.engine.settings import Settings, default_config_path, load_settings

_loaded: dict[str, tuple[tuple[int, int], Settings]] = {}  # path -> (mtime_ns, size), what it held


def location_settings() -> Settings:
    """The config the code location reads now; UltraOpsError when it cannot be read (a tick reports it)."""
    path = default_config_path().resolve()
    try:
        stat = path.stat()
    except OSError:
        return load_settings(path)  # the reader names the missing file
    version = (stat.st_mtime_ns, stat.st_size)
    cached = _loaded.get(str(path))
    if cached is None or cached[0] != version:
        cached = _loaded[str(path)] = (version, load_settings(path))
    return cached[1]


def loaded_settings() -> Settings | None:
    """`location_settings`, or None when it cannot be read: loading the code location must not fail
    over the config (its ticks report the error)."""
    try:
        return location_settings()
    except (UltraOpsError, OSError):
        return None


def tick_settings() -> Settings | SkipReason:
    """What a schedule or sensor tick reads: the config, or the skip that names its error."""
    try:
        return location_settings()
    except UltraOpsError as exc:
        return SkipReason(f"config error: {exc}")


def location_timezone(settings: Settings | None) -> str:
    """The config's time zone as the code location loaded it; UTC when it could not be read."""
    return settings.timezone if settings else "UTC"
