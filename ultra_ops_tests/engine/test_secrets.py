"""The redactor masks a secret in every form it takes in messages."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from ultra_ops.engine.secrets import MASK, Redactor

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-Pa$$ w/rd+\x01"


@pytest.mark.parametrize(
    "secret, shown",
    [
        (SECRET, SECRET),
        (SECRET + "\r\n", "Illegal header value " + repr(("Bearer " + SECRET + "\r\n").encode())),
        (SECRET + "\r", "password " + repr(SECRET + "\r")),
        (" " + SECRET + "\n", f"password={SECRET} ends here"),
        (SECRET, json.dumps({"password": SECRET})),
        (SECRET, "postgresql://u:" + urllib.parse.quote(SECRET, safe="") + "@db/x"),
        (SECRET, "form: p=" + urllib.parse.quote_plus(SECRET)),
        # An exception quoting another's repr (KeyError's text is its message's repr), escaped twice.
        (SECRET + "\r", "KeyError: " + repr("sending " + repr(("Bearer " + SECRET + "\r").encode()))),
        (SECRET, json.dumps({"error": repr(SECRET)})),
    ],
)
def test_every_form_of_a_secret_is_masked(secret: str, shown: str) -> None:
    text = Redactor([secret])(shown)
    assert MASK in text
    core = SECRET.strip()
    for form in (
        core,
        repr(core)[1:-1],
        urllib.parse.quote(core, safe=""),
        urllib.parse.quote_plus(core),
        json.dumps(core)[1:-1],
        "s3cr3t-Pa",
    ):
        assert form not in text, text


def test_short_values_are_left_alone() -> None:
    assert Redactor(["ab\r\n", "abc"])("abc ab") == "abc ab"
