"""What deploy_job's launchpad offers for an environment: the version its next release tick would
deploy, when that is newer than the version it runs; else nothing, and why."""

from __future__ import annotations

from ultra_ops.engine.calendar.ticks import release_candidate
from ultra_ops.engine.deployed import deployed_version
from ultra_ops.engine.errors import InputError
from ultra_ops.engine.settings import Settings
from ultra_ops.engine.versions import DEVELOPMENT, Version


def offered_version(settings: Settings, environment: str) -> tuple[str | None, str]:
    """(version, "") to pre-fill, or (None, why there is none). Never an older version than the one
    running, nor the same one: the form must not make a downgrade or a no-op one click away."""
    if environment == DEVELOPMENT:
        return None, "development has no release schedule: an empty tag deploys main as v0.0.0-dev.<time>"
    version, why = release_candidate(settings, environment)
    if version is None:
        return None, why
    env = settings.environments.get(environment)
    current = deployed_version(env) if env is not None else None
    if current is not None and Version.parse(version) <= _parsed_or_lowest(current):
        return None, f"nothing newer than {current}, which {environment} runs: its next release would be {version}"
    return version, ""


def _parsed_or_lowest(text: str) -> Version:
    try:
        return Version.parse(text)
    except InputError:  # hand-written into an env file: older than any release
        return Version(0, 0, 0, ("0",))
