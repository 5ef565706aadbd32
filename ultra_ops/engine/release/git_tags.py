"""Git tags of releases: the annotated tag the release document makes, and the commit a version names.

Not the Dagster run tags (defs/shared/tags.py) and not the version string itself (engine/versions.py).
"""

from __future__ import annotations

from datetime import datetime

from ultra_ops.engine.errors import CommandFailed, OperationError
from ultra_ops.engine.release.branches import branch_commit, has_origin
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
    """Create the annotated git tag of the release document on the release's commit (the tip of
    `release/<version>` where that branch exists, else HEAD), and push it where git_push is set.
    Only environments with `tag_releases` tag (production by default: the document tags a release
    once it is in production)."""
    log = log or NullLog()
    if env.git_repo is None:
        log.info(f"no git repository configured for {env.name}: release tag {version} not created")
        return "skipped"
    if not env.git_repo.is_dir():
        log.warning(f"git_repo {env.git_repo} of {env.name} does not exist: release tag {version} not created")
        return "skipped"
    if not env.tag_releases:
        log.info(f"{env.name} does not tag releases (tag_releases = false): {version} is tagged in production")
        return "skipped"
    repo = str(env.git_repo)
    if _rev_parse(repo, f"refs/tags/{version}") is not None:
        log.info(f"git tag {version} already exists in {repo}")
        return "exists"
    target = branch_commit(env.git_repo, version) or "HEAD"
    push = env.git_push and has_origin(env.git_repo)
    if env.git_push and not push:
        log.warning(f"git_push is set but {repo} has no remote origin: tag {version} stays local")
    try:
        run(["git", "-C", repo, "tag", "-a", version, "-m", f"Release {version}", target], timeout=_GIT_TIMEOUT_S)
    except OperationError as exc:
        raise OperationError(f"tagging release {version} failed: {exc}") from None
    if push:
        try:
            run(["git", "-C", repo, "push", "origin", f"refs/tags/{version}"], timeout=_GIT_PUSH_TIMEOUT_S)
        except (OperationError, KeyboardInterrupt) as exc:
            # The tag goes again, so a re-executed step creates and pushes it rather than finding it.
            run(["git", "-C", repo, "tag", "-d", version], timeout=_GIT_TIMEOUT_S, check=False)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise OperationError(f"pushing release tag {version} to origin failed: {exc}") from None
    log.info(
        f"created git tag {version} in {repo} on {target if target == 'HEAD' else target[:12]}"
        + (" and pushed it to origin" if push else "")
    )
    return "created"


def commit_of(env: Environment, version: str | None) -> str | None:
    """The commit of release `version` in env.git_repo: its tag's, else its release branch's tip;
    None without a repo, a tag or a branch."""
    if env.git_repo is None or not version or version.startswith("-"):
        return None
    try:
        return _rev_parse(str(env.git_repo), f"refs/tags/{version}^{{commit}}") or branch_commit(env.git_repo, version)
    except CommandFailed:  # no git on this machine, the repository folder is gone, or git hung
        return None


def commit_time(env: Environment, commit: str | None) -> datetime | None:
    """When `commit` was made (its committer date), for lead time; None without a repo or commit."""
    if env.git_repo is None or not commit or not all(c in "0123456789abcdef" for c in commit):
        return None
    try:
        shown = run(
            ["git", "-C", str(env.git_repo), "show", "-s", "--format=%cI", commit], timeout=_GIT_TIMEOUT_S, check=False
        )
    except CommandFailed:
        return None
    try:
        return datetime.fromisoformat(shown.stdout.strip()) if shown.returncode == 0 else None
    except ValueError:
        return None
