"""Release tags: the annotated git tag of the release document, and the commit a tag names."""

from __future__ import annotations

import subprocess

from ultra_ops.engine.errors import OperationError
from ultra_ops.engine.secrets import Log, NullLog
from ultra_ops.engine.settings import Environment
from ultra_ops.engine.shell import run


def _rev_parse(repo: str, ref: str) -> str | None:
    found = subprocess.run(["git", "-C", repo, "rev-parse", "-q", "--verify", ref], capture_output=True, text=True)
    if found.returncode != 0:
        return None
    return found.stdout.strip() or None


def tag_release(env: Environment, version: str, *, log: Log | None = None) -> str:
    """Create the annotated git tag of the release document (and push it when configured)."""
    log = log or NullLog()
    if env.git_repo is None:
        log.info(f"no git repository configured for {env.name}: release tag {version} not created")
        return "skipped"
    repo = str(env.git_repo)
    if _rev_parse(repo, f"refs/tags/{version}") is not None:
        log.info(f"git tag {version} already exists in {repo}")
        return "exists"
    try:
        run(["git", "-C", repo, "tag", "-a", version, "-m", f"Release {version}"])
        if env.git_push:
            run(["git", "-C", repo, "push", "origin", version], timeout=120)
    except OperationError as exc:
        raise OperationError(f"tagging release {version} failed: {exc}") from None
    log.info(f"created git tag {version} in {repo}" + (" and pushed it" if env.git_push else ""))
    return "created"


def commit_of(env: Environment, version: str | None) -> str | None:
    """The commit the release tag `version` points at in env.git_repo; None without a repo or tag."""
    if env.git_repo is None or not version or version.startswith("-"):
        return None
    try:
        return _rev_parse(str(env.git_repo), f"refs/tags/{version}^{{commit}}")
    except OSError:  # no git on this machine, or the repository folder is gone
        return None
