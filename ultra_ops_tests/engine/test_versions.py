"""Versions and the promotion order: how versions sort and where a release comes from."""

from __future__ import annotations

from datetime import datetime

import pytest

from ultra_ops.engine.errors import InputError
from ultra_ops.engine.settings import ENVIRONMENT_NAMES
from ultra_ops.engine.versions import (
    PROMOTED,
    PROMOTION,
    Version,
    development_version,
    environment_below,
    is_release,
    release_key,
)

pytestmark = pytest.mark.unit


def test_promotion_order_is_the_configs_environments() -> None:
    assert PROMOTION == ENVIRONMENT_NAMES == ("development", "staging", "production")
    assert PROMOTED == ("staging", "production")
    assert [environment_below(e) for e in PROMOTION] == [None, "development", "staging"]
    assert environment_below("qa") is None


def test_versions_sort_by_semantic_version_precedence() -> None:
    # The order semver.org gives, shuffled: pre-releases before their release, numbers by value.
    ordered = [
        "v0.0.0-dev.20261126120000",
        "v1.0.0-alpha",
        "v1.0.0-alpha.1",
        "v1.0.0-alpha.beta",
        "v1.0.0-beta",
        "v1.0.0-beta.2",
        "v1.0.0-beta.11",
        "v1.0.0-rc.1",
        "v1.0.0",
        "v1.2.0",
        "v1.10.0",
        "v2.0.0",
    ]
    shuffled = ordered[5:] + ordered[:5]
    assert [str(v) for v in sorted(Version.parse(t) for t in shuffled)] == ordered
    assert Version.parse("v1.0.0+build.5") == Version.parse("v1.0.0")
    assert str(Version.parse("v1.0.0+build.5")) == "v1.0.0+build.5"
    with pytest.raises(InputError, match="semantic version"):
        Version.parse("v01.0.0")


def test_releases_and_development_builds() -> None:
    dev = development_version(datetime(2026, 11, 26, 12, 0, 0))
    assert dev == "v0.0.0-dev.20261126120000" and not is_release(dev)
    assert is_release("v1.2.3") and release_key("v1.10.0") > release_key("v1.9.0")
    with pytest.raises(InputError, match="not a release version"):
        release_key(dev)
