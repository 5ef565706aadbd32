"""Launch forms of the maintenance domain."""

from dagster import Config
from pydantic import Field


class CacheClearConfig(Config):
    pattern: str | None = Field(
        default=None, description="Remove the keys matching this Redis glob, e.g. 'ultra:cache:*'"
    )
    flush_all: bool = Field(
        default=False,
        description="Remove every key of the environment's Redis database (FLUSHDB, never the other databases)",
    )
