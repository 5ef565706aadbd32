"""Settings: the configuration model and the TOML file it is read from, one module per section.

The ground floor of ultra_ops: these modules import nothing of the engine above errors and inputs.
Imported all over ultra_ops, so the public names stay importable from here.
"""

from ultra_ops.engine.settings.backup import BACKUP_FORMATS, BackupSettings
from ultra_ops.engine.settings.config import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_NAME,
    ENVIRONMENT_NAMES,
    Settings,
    default_config_path,
    load_settings,
)
from ultra_ops.engine.settings.database import DatabaseSettings, RedisSettings
from ultra_ops.engine.settings.environment import RUNTIMES, Environment
from ultra_ops.engine.settings.host import HostSettings
from ultra_ops.engine.settings.llm_providers import LlmProvider
from ultra_ops.engine.settings.processes import ProcessSpec
from ultra_ops.engine.settings.verify import EndpointCheck, VerifySettings

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
    "HostSettings",
    "LlmProvider",
    "ProcessSpec",
    "RedisSettings",
    "Settings",
    "VerifySettings",
    "default_config_path",
    "load_settings",
]
