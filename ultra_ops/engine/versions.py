"""Release versions and the promotion order: what a version looks like and where a release goes next.

A version is `v` + a semantic version (the release document's v1.2.3); a release version is plain
vX.Y.Z, without the pre-release a development build carries. A release goes development ->
staging -> production. The env files name the version an environment runs under one key.

This module sits at the bottom of the engine (it imports only the errors): the settings, the
backups, the runtimes, the calendar and the release steps all speak of versions and environments.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime

from ultra_ops.engine.errors import InputError

# The env files' key for the version an environment runs: a deploy writes it, a backup keeps it with
# the state files, so a rollback brings back the version that belongs to the restored database.
VERSION_KEY = "ULTRA_VERSION"

DEVELOPMENT, STAGING, PRODUCTION = "development", "staging", "production"
PROMOTION = (DEVELOPMENT, STAGING, PRODUCTION)
# A release reaches these only from the environment below: the calendar schedules and gates them,
# while development deploys whenever someone launches one.
PROMOTED = PROMOTION[1:]

# Semantic version 2.0.0 with the release document's leading "v": what a deploy accepts as its tag.
VERSION_TAG = re.compile(
    r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
# vX.Y.Z alone: what release branches are named and the calendar promotes. As loose as a branch
# name someone made by hand (release/v01.2.0 still sorts by its numbers).
RELEASE_VERSION = re.compile(r"v(\d+)\.(\d+)\.(\d+)")
MAX_VERSION_LENGTH = 64


def environment_below(name: str) -> str | None:
    """The environment a release comes from on its way to `name`: None for development (releases
    start there) and for a name outside the promotion order."""
    if name not in PROMOTED:
        return None
    return PROMOTION[PROMOTION.index(name) - 1]


def is_release(version: str) -> bool:
    """Whether `version` is a release vX.Y.Z, not a development build (v0.0.0-dev.<timestamp>)."""
    return RELEASE_VERSION.fullmatch(version) is not None


def release_key(version: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a release version, to sort releases by; InputError for anything else."""
    match = RELEASE_VERSION.fullmatch(version)
    if match is None:
        raise InputError(f"{version!r} is not a release version vX.Y.Z")
    return int(match[1]), int(match[2]), int(match[3])


def development_version(now: datetime) -> str:
    """The version of a development deploy without a tag: before every release, sortable by time."""
    return "v0.0.0-dev." + now.strftime("%Y%m%d%H%M%S")


@functools.total_ordering
@dataclass(frozen=True, eq=False)
class Version:
    """A parsed version, ordered by semantic-version precedence: a pre-release comes before its
    release, and build metadata does not count (so v1.0.0+a == v1.0.0+b, as semver says)."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: str = ""

    @classmethod
    def parse(cls, text: str) -> Version:
        match = VERSION_TAG.fullmatch(text)
        if match is None:
            raise InputError(f"{text[:80]!r} is not v + a semantic version (e.g. v1.2.3)")
        prerelease = tuple(match[4].split(".")) if match[4] else ()
        return cls(int(match[1]), int(match[2]), int(match[3]), prerelease, match[5] or "")

    def _precedence(self) -> tuple:
        # A release sorts after its pre-releases; numeric identifiers before alphanumeric ones.
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, not self.prerelease, pre)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._precedence() == other._precedence()

    def __lt__(self, other: Version) -> bool:
        return self._precedence() < other._precedence()

    def __hash__(self) -> int:
        return hash(self._precedence())

    def __str__(self) -> str:
        pre = "-" + ".".join(self.prerelease) if self.prerelease else ""
        return f"v{self.major}.{self.minor}.{self.patch}{pre}" + (f"+{self.build}" if self.build else "")
