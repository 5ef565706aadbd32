"""Launch forms of the backups domain."""

from dagster import Config
from pydantic import Field


class PruneConfig(Config):
    dry_run: bool = Field(default=False, description="Only show what the retention policy would remove")


class PinConfig(Config):
    backup_id: str = Field(description="The backup to pin or unpin")
    pinned: bool = Field(default=True, description="True pins it (kept forever), false unpins it")


class VerifyBackupsConfig(Config):
    backup_id: str | None = Field(default=None, description="One backup to verify; every backup when empty")
