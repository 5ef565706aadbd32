"""What deploy_job's launchpad offers for an environment: the version its next release tick would
deploy (never older than, or the same as, the one it runs); else nothing, and why."""

from __future__ import annotations

from ultra_ops.engine.calendar.ticks import release_candidate
from ultra_ops.engine.settings import Settings
from ultra_ops.engine.versions import DEVELOPMENT


def offered_version(settings: Settings, environment: str) -> tuple[str | None, str]:
    """(version, "") to pre-fill, or (None, why there is none): the form must not make a downgrade
    or a no-op one click away."""
    if environment == DEVELOPMENT:
        return None, "development has no release schedule: an empty tag deploys main as v0.0.0-dev.<time>"
    return release_candidate(settings, environment)
