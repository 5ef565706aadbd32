"""The gates a deploy passes before it changes anything: the promotion gate and freezes.

Emergency fixes bypass both (never the tests, the checklist or the verification), with a reason
that stays with the run and the release record.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from ultra_ops.engine.errors import InputError, OperationError
from ultra_ops.engine.release.downgrade import downgrade_reason
from ultra_ops.engine.release.records import verified_deploys
from ultra_ops.engine.settings import Settings
from ultra_ops.engine.versions import PRODUCTION, PROMOTED, environment_below


class DeployRefused(OperationError):
    """The calendar or the promotion gate refuses this deploy."""


def local_today(settings: Settings, now: datetime | None = None) -> date:
    """Today in the config's time zone: freezes and holidays are local dates."""
    return (now or datetime.now(UTC)).astimezone(ZoneInfo(settings.timezone)).date()


def check_emergency(emergency: bool, reason: str | None) -> str | None:
    """The emergency's reason, required with it; None for a normal deploy."""
    if not emergency:
        if reason:
            raise InputError("--reason is for emergency deploys: pass --emergency too")
        return None
    reason = (reason or "").strip()
    if not reason:
        raise InputError("an emergency deploy needs --reason saying why it cannot wait")
    if len(reason) > 500 or not reason.isprintable():
        raise InputError("the emergency reason must be at most 500 printable characters")
    return reason


def deploy_reasons(emergency: bool, allow_downgrade: bool, reason: str | None) -> tuple[str | None, str | None]:
    """(emergency reason, downgrade reason): one --reason explains --emergency, --allow-downgrade or
    both, and goes with neither alone."""
    if reason and not emergency and not allow_downgrade:
        raise InputError("--reason goes with --emergency or --allow-downgrade: pass the flag it explains")
    return check_emergency(emergency, reason if emergency else None), downgrade_reason(allow_downgrade, reason)


def check_deploy(
    settings: Settings, environment: str, version: str, today: date, *, emergency_reason: str | None = None
) -> None:
    """Refuse a deploy the calendar does not allow: production without a verified staging deploy
    of the same version, and any staging or production deploy inside a freeze or on a holiday."""
    if emergency_reason:
        return
    if environment in PROMOTED:
        blocked = settings.calendar.blocked(today)
        if blocked:
            raise DeployRefused(
                f"{environment} deploys are refused {today}: {blocked} "
                "(an emergency fix can pass with --emergency --reason)"
            )
    below = environment_below(environment)
    if environment == PRODUCTION and below in settings.environments:
        if not verified_deploys(settings.environments[below], version=version, limit=1):
            raise DeployRefused(
                f"{version} has no successful, verified deploy on {below}: deploy it there "
                "first (or pass --emergency --reason for a fix that cannot wait)"
            )
