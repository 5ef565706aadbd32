"""Settings: the configuration model and the TOML file it is read from.

Imported all over ultra_ops, so the public names stay importable from here.
"""

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
    Settings,
    VerifySettings,
)
from ultra_ops.engine.settings.reader import default_config_path, load_settings

__all__ = [
    "BACKUP_FORMATS",
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_NAME",
    "ENVIRONMENT_NAMES",
    "RUNTIMES",
    "BackupSettings",
    "DatabaseSettings",
    "EndpointCheck",
    "Environment",
    "LlmProvider",
    "ProcessSpec",
    "RedisSettings",
    "Settings",
    "VerifySettings",
    "default_config_path",
    "load_settings",
]
