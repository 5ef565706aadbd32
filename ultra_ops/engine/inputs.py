"""Validation of operator input: release tags, environment names, backup ids.

Everything here is checked before anything is written, so bad input leaves no trace.
"""

from __future__ import annotations

import re

from ultra_ops.engine.errors import InputError
from ultra_ops.engine.versions import MAX_VERSION_LENGTH, VERSION_TAG

_ENVIRONMENT = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# Backup ids become directory names: one path component, no dots at the start, bounded length.
_BACKUP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _shown(value: str, limit: int = 40) -> str:
    text = value if len(value) <= limit else value[:limit] + f"... ({len(value)} characters)"
    return repr(text)


def validate_tag(tag: str | None) -> str:
    """Return the tag if it is `v` + a semantic version, else raise InputError."""
    if tag is None or tag == "":
        raise InputError("release tag is empty: expected v + semantic version, e.g. v1.2.3")
    if len(tag) > MAX_VERSION_LENGTH:
        raise InputError(f"release tag {_shown(tag)} is longer than {MAX_VERSION_LENGTH} characters")
    if not VERSION_TAG.fullmatch(tag):
        raise InputError(f"release tag {_shown(tag)} is not v + a semantic version (e.g. v1.2.3, v2.0.0-rc.1)")
    return tag


def validate_environment_name(name: str | None, known: list[str] | None = None) -> str:
    """Return the environment name if well formed (and known, when a list is given)."""
    if not name:
        raise InputError("environment is empty: expected one of " + ", ".join(known or []))
    if not _ENVIRONMENT.fullmatch(name):
        raise InputError(f"environment {_shown(name)} is not a valid environment name")
    if known is not None and name not in known:
        raise InputError(f"unknown environment {_shown(name)}: expected one of {', '.join(known)}")
    return name


def validate_backup_id(backup_id: str | None) -> str:
    """Return the backup id if it is a safe single path component, else raise InputError."""
    if backup_id is None or backup_id == "":
        raise InputError("backup id is empty")
    if len(backup_id) > 100:
        raise InputError(f"backup id {_shown(backup_id)} is longer than 100 characters")
    if ".." in backup_id or not _BACKUP_ID.fullmatch(backup_id):
        raise InputError(f"backup id {_shown(backup_id)} is not valid: letters, digits, '.', '_' and '-' only")
    return backup_id
