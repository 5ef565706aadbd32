"""Launch forms of the calendar domain."""

from dagster import Config
from pydantic import Field


class ApproveConfig(Config):
    tag: str = Field(description="The version approved, e.g. v1.2.3")
    by: str = Field(description="Who approves it")
    at: str | None = Field(
        default=None,
        description="When the approval starts to count (ISO time with zone, "
        "e.g. for a coming tick); empty: now. At most expires_hours ahead.",
    )
