"""The launch form of backup_job."""

from dagster import Config
from pydantic import Field

from ultra_ops.defs.release.config import EnvironmentName


class BackupConfig(Config):
    environment: EnvironmentName = Field(description="Environment to back up")  # type: ignore[valid-type]
