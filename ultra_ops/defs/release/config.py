"""Launch forms: the typed run config of the release jobs, as the UI's launchpad shows it."""


import enum

from dagster import Config
from pydantic import Field

from ultra_ops.engine.settings import ENVIRONMENT_NAMES

EnvironmentName = enum.Enum("EnvironmentName", {name: name for name in ENVIRONMENT_NAMES})


class DeployConfig(Config):
    environment: EnvironmentName = Field(description="Environment to deploy to")  # type: ignore[valid-type]
    tag: str = Field(description="Release tag: v + semantic version, e.g. v1.2.3")
    skip_tests: bool = Field(default=False, description="Skip the test command (not recommended for production)")
    skip_build: bool = Field(default=False, description="Skip building images")
    compose_file: str | None = Field(default=None, description="A custom Docker Compose file")
    registry: str | None = Field(default=None, description="Push images to this registry")


class VerifyConfig(Config):
    environment: EnvironmentName = Field(description="Environment to verify")  # type: ignore[valid-type]


class RollbackConfig(Config):
    environment: EnvironmentName = Field(description="Environment to roll back")  # type: ignore[valid-type]
    backup_id: str | None = Field(default=None, description="Backup to restore; the newest when empty")
