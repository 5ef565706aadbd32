"""No accidental downgrade: a deploy of a version older than the one an environment runs is refused
before anything changes, unless the operator allows it with a reason (recorded with the release).

Older means lower by semantic-version precedence (`Version`). Redeploying the version that runs is
not a downgrade. The way back to an earlier state stays a rollback to a backup, which brings the
database that belongs to that version; a downgrade deploy runs an old release on today's data.

A development build (what an untagged development deploy builds from main, v0.0.0-dev.<time>) is
main as of that time, not a version before every release: on development it is compared only with
other development builds, so an untagged deploy after a tagged one is not a downgrade.
"""

from __future__ import annotations

from ultra_ops.engine.errors import InputError
from ultra_ops.engine.versions import DEVELOPMENT, Version

MAX_REASON = 500


class DowngradeRefused(InputError):
    """The deploy would put an older version in place of the one running, and was not allowed to."""


def _is_development_build(version: Version) -> bool:
    return (version.major, version.minor, version.patch) == (0, 0, 0) and version.prerelease[:1] == ("dev",)


def _parsed(text: str) -> Version | None:
    try:
        return Version.parse(text)
    except InputError:
        return None  # hand-written into an env file: nothing to compare with


def is_downgrade(environment: str, current: str | None, target: str) -> bool:
    """Whether deploying `target` where `current` runs puts an older version in place."""
    old, new = (_parsed(current) if current else None), _parsed(target)
    if old is None or new is None:
        return False
    if environment == DEVELOPMENT and _is_development_build(new) and not _is_development_build(old):
        return False
    return new < old


def is_newer(target: str, current: str | None) -> bool:
    """Whether `target` is newer than `current` (nothing deployed, or a hand-written version, counts
    as older than any): what the calendar and the launchpad offer."""
    old, new = (_parsed(current) if current else None), _parsed(target)
    return new is not None and (old is None or old < new)


def downgrade_reason(allow: bool, reason: str | None) -> str | None:
    """The reason that goes with allowing a downgrade, required with it; None without the flag."""
    if not allow:
        return None
    reason = (reason or "").strip()
    if not reason:
        raise InputError("--allow-downgrade needs --reason saying why the older version must run")
    if len(reason) > MAX_REASON or not reason.isprintable():
        raise InputError(f"the downgrade reason must be at most {MAX_REASON} printable characters")
    return reason


def check_downgrade(environment: str, current: str | None, target: str, *, allowed: str | None) -> str | None:
    """Refuse a downgrade (naming both versions) unless `allowed` gives its reason. Returns what the
    release record keeps: `downgrade from <current>: <reason>`, or None when it is no downgrade."""
    if not is_downgrade(environment, current, target):
        return None
    if allowed is None:
        raise DowngradeRefused(
            f"refusing to downgrade {environment} from {current} to {target}: pass --allow-downgrade "
            "--reason TEXT (allow_downgrade and reason in the launch form) to deploy the older version "
            "anyway, or roll back to a backup with `ultra-ops rollback`"
        )
    return f"downgrade from {current}: {allowed}"


def version_change(current: str | None, target: str) -> str:
    """What a deploy changes, as the plan step shows and records it: `v1.1.0 → v1.2.0`."""
    return f"{current or 'nothing deployed'} → {target}"
