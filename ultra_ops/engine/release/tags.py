"""Release tags: the annotated git tag of the release document, and the commit a tag names."""

from __future__ import annotations

from datetime import datetime

from ultra_ops.engine.errors import CommandFailed, OperationError
from ultra_ops.engine.secrets import Log, NullLog
from ultra_ops.engine.settings import Environment
from ultra_ops.engine.shell import run

# git runs with the basic environment only (shell.child_env): no environment's secrets.
_GIT_TIMEOUT_S = 30.0
_GIT_PUSH_TIMEOUT_S = 120.0


def _rev_parse(repo: str, ref: str) -> str | None:
    found = run(["git", "-C", repo, "rev-parse", "-q", "--verify", ref], timeout=_GIT_TIMEOUT_S, check=False)
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
        run(["git", "-C", repo, "tag", "-a", version, "-m", f"Release {version}"], timeout=_GIT_TIMEOUT_S)
        if env.git_push:
            run(["git", "-C", repo, "push", "origin", version], timeout=_GIT_PUSH_TIMEOUT_S)
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
    except CommandFailed:  # no git on this machine, the repository folder is gone, or git hung
        return None


def commit_time(env: Environment, commit: str | None) -> datetime | None:
    """When `commit` was made (its committer date), for lead time; None without a repo or commit."""
    if env.git_repo is None or not commit or not all(c in "0123456789abcdef" for c in commit):
        return None
    try:
        shown = run(["git", "-C", str(env.git_repo), "show", "-s", "--format=%cI", commit], timeout=_GIT_TIMEOUT_S,
                    check=False)
    except CommandFailed:
        return None
    try:
        return datetime.fromisoformat(shown.stdout.strip()) if shown.returncode == 0 else None
    except ValueError:
        return None
