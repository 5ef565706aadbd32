"""No accidental downgrade, and what the launchpad offers: the rules, without a service."""

from __future__ import annotations

from pathlib import Path

import pytest

from ultra_ops.engine.calendar.gates import deploy_reasons
from ultra_ops.engine.calendar.offer import offered_version
from ultra_ops.engine.calendar.ticks import release_candidate
from ultra_ops.engine.errors import InputError
from ultra_ops.engine.release.downgrade import DowngradeRefused, check_downgrade, is_downgrade, version_change
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.configs import write_multi_config
from ultra_ops_tests.support.releases import running

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("environment", "current", "target", "downgrade"),
    [
        ("staging", "v1.2.0", "v1.1.0", True),
        ("staging", "v1.2.0", "v1.2.0", False),  # a redeploy of what runs: not a downgrade
        ("staging", "v1.2.0", "v1.10.0", False),  # versions, not text
        ("staging", "v1.2.0", "v1.2.0-rc.1", True),  # a pre-release comes before its release
        ("staging", "v1.2.0+a", "v1.2.0+b", False),  # build metadata does not count
        ("staging", None, "v0.1.0", False),  # nothing deployed yet
        ("staging", "latest", "v0.1.0", False),  # hand-written: nothing to compare with
        ("staging", "v1.0.0", "v0.0.0-dev.20261204120000", True),  # a dev build is a version like any other
        ("development", "v1.0.0", "v0.0.0-dev.20261204120000", False),  # on development: main as of now
        ("development", "v0.0.0-dev.20261204120000", "v0.0.0-dev.20261201120000", True),  # an older build
    ],
)
def test_a_downgrade_is_a_lower_semantic_version(environment: str, current, target: str, downgrade: bool) -> None:  # noqa: ANN001
    assert is_downgrade(environment, current, target) is downgrade


def test_a_downgrade_is_refused_naming_both_versions_unless_allowed_with_a_reason() -> None:
    with pytest.raises(DowngradeRefused) as refused:
        check_downgrade("staging", "v1.2.0", "v1.1.0", allowed=None)
    message = str(refused.value)
    # One sentence: each version named once, and the two ways out.
    assert "refusing to downgrade staging from v1.2.0 to v1.1.0:" in message
    assert message.count("v1.2.0") == message.count("v1.1.0") == 1 and message.count(";") == 0
    assert "--allow-downgrade --reason TEXT" in message and "roll back to a backup with `ultra-ops rollback`" in message
    assert refused.value.exit_code == 2
    assert (
        check_downgrade("staging", "v1.2.0", "v1.1.0", allowed="exports broke")
        == "downgrade from v1.2.0: exports broke"
    )
    assert check_downgrade("staging", "v1.1.0", "v1.2.0", allowed="habit") is None  # no downgrade: nothing noted
    assert version_change("v1.1.0", "v1.2.0") == "v1.1.0 → v1.2.0"
    assert version_change(None, "v1.0.0") == "nothing deployed → v1.0.0"


def test_one_reason_explains_the_flag_it_goes_with() -> None:
    assert deploy_reasons(False, True, " exports broke ") == (None, "exports broke")
    assert deploy_reasons(True, False, "CVE fix") == ("CVE fix", None)
    assert deploy_reasons(True, True, "both") == ("both", "both")
    with pytest.raises(InputError, match="--reason goes with --emergency or --allow-downgrade"):
        deploy_reasons(False, False, "why")
    with pytest.raises(InputError, match="--allow-downgrade needs --reason"):
        deploy_reasons(False, True, "  ")
    with pytest.raises(InputError, match="printable"):
        deploy_reasons(False, True, "line\nbreak")


def test_the_launchpad_offers_only_a_newer_version_and_says_why_when_none(tmp_path: Path) -> None:
    config = write_multi_config(
        tmp_path, {"development": "u_d", "staging": "u_s", "production": "u_p"}, redis_prefix="unused:"
    )
    settings = load_settings(config)
    envs = settings.environments
    running(envs["staging"], "v1.2.0")
    running(envs["development"], "v1.1.0")
    # Development's v1.1.0, which staging never had, is older: no tick deploys it, nor does the form offer it.
    assert (
        release_candidate(settings, "staging")
        == offered_version(settings, "staging")
        == (
            None,
            "nothing newer than v1.2.0, which staging runs: its next release would be v1.1.0",
        )
    )
    running(envs["development"], "v1.3.0")
    assert offered_version(settings, "staging") == ("v1.3.0", "")
    # Production runs nothing yet: staging's verified v1.2.0 is offered; once it runs it, nothing is.
    assert offered_version(settings, "production") == ("v1.2.0", "")
    running(envs["production"], "v1.2.0")
    version, why = offered_version(settings, "production")
    assert version is None and why.startswith("nothing new to release")
    version, why = offered_version(settings, "development")
    assert version is None and "v0.0.0-dev" in why


def test_the_demo_run_again_deploys_its_first_release_as_an_allowed_downgrade(tmp_path: Path) -> None:
    from ultra_ops.demo import _starting_over

    config = write_multi_config(tmp_path, {"development": "u_d", "staging": "u_s"}, redis_prefix="unused:")
    settings = load_settings(config)
    running(settings.environments["development"], "v1.1.0")
    first = ["deploy", "--environment", "development", "--tag", "v1.0.0", "--skip-build"]
    assert _starting_over(settings, first) == [*first, "--allow-downgrade", "--reason", "the demo starts over"]
    fresh = ["deploy", "--environment", "staging", "--tag", "v1.0.0", "--skip-build"]
    assert _starting_over(settings, fresh) == fresh
    assert _starting_over(settings, ["verify", "--environment", "staging"]) == ["verify", "--environment", "staging"]
