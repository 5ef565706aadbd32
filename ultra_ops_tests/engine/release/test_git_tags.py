"""Release tags in the engine: the annotated tag of a release, and the commit it names."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ultra_ops.engine.release.git_tags import commit_of, tag_release
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.configs import write_config

pytestmark = pytest.mark.unit


def test_commit_of_a_release_tag(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "one"], check=True)
    extra = f'git_repo = "{repo}"\ntag_releases = true'
    env = load_settings(write_config(tmp_path, "uo_records_unused", extra=extra)).environment("staging")
    assert commit_of(env, "v1.0.0") is None  # not tagged yet
    assert tag_release(env, "v1.0.0") == "created"
    first = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "two"], check=True)
    assert tag_release(env, "v1.1.0") == "created"
    second = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    # The annotated tag's commit, not the tag object's id.
    assert commit_of(env, "v1.0.0") == first and commit_of(env, "v1.1.0") == second != first
    assert commit_of(env, None) is None and commit_of(env, "--all") is None
    (tmp_path / "other").mkdir()
    no_repo = load_settings(write_config(tmp_path / "other", "uo_records_unused")).environment("staging")
    assert commit_of(no_repo, "v1.0.0") is None
