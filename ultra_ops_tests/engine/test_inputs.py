"""Operator input: release tags and backup ids."""

from __future__ import annotations

import pytest

from ultra_ops.engine.errors import InputError
from ultra_ops.engine.inputs import validate_backup_id, validate_environment_name, validate_tag

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "tag", ["v1.2.3", "v0.0.1", "v10.20.30", "v2.0.0-rc.1", "v1.0.0+build.5", "v0.0.0-dev.20261126120000"]
)
def test_semantic_version_tags_pass(tag: str) -> None:
    assert validate_tag(tag) == tag


@pytest.mark.parametrize(
    "tag, words",
    [
        ("", "empty"),
        ("1.2.3", "semantic version"),
        ("v1.2", "not v"),
        ("v01.2.3", "not v"),
        ("v1.2.3 ", "not v"),
        ("v1.2.3\n", "not v"),
        ("v1.2.3\r\n", "not v"),
        ("v1.2.3;reboot", "not v"),
        ("v1.2.3/../../x", "not v"),
        ("v" + "1" * 70, "longer"),
    ],
)
def test_bad_tags_are_refused_with_the_reason(tag: str, words: str) -> None:
    with pytest.raises(InputError, match=words):
        validate_tag(tag)


@pytest.mark.parametrize(
    "backup_id",
    ["../x", "..", ".hidden", "a/b", "a;rm -rf /", "$(id)", "", "x" * 101, "a b", "a\nb", "20260101T000000Z-ab12\n"],
)
def test_bad_backup_ids_are_refused(backup_id: str) -> None:
    with pytest.raises(InputError):
        validate_backup_id(backup_id)


def test_long_input_is_shortened_in_the_message() -> None:
    with pytest.raises(InputError) as info:
        validate_tag("v" + "9" * 5000)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize("name", ["staging\n", "staging\r", "Staging", ""])
def test_bad_environment_names_are_refused(name: str) -> None:
    with pytest.raises(InputError):
        validate_environment_name(name, ["staging"])
