"""Release branches: `release/vX.Y.Z` made from main, with the version written into the release.

The release document's "Release Branch" and "Update the version number" steps. The branch is built
with git's plumbing (a temporary index, commit-tree, update-ref) rather than a checkout: the
repository's working tree, index and HEAD are never touched, a bare repository works the same,
and a job killed half way leaves no branch at all (only unreferenced objects git collects later).
The branch appears in one `update-ref` that refuses to overwrite an existing one.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ultra_ops.engine.envfile import parse_env_text, with_values
from ultra_ops.engine.errors import CommandFailed, InputError, OperationError
from ultra_ops.engine.inputs import validate_tag
from ultra_ops.engine.secrets import Log, NullLog
from ultra_ops.engine.settings import Settings
from ultra_ops.engine.shell import run
from ultra_ops.engine.versions import VERSION_KEY, is_release, release_key

PREFIX = "release/"
MAIN = "main"
_GIT_TIMEOUT_S = 30.0
_GIT_PUSH_TIMEOUT_S = 120.0
# Who commits a release: the committer is ultra_ops; the author the person who launched it.
_COMMITTER = {"GIT_COMMITTER_NAME": "ultra-ops", "GIT_COMMITTER_EMAIL": "ultra-ops@localhost"}


@dataclass(frozen=True)
class ReleaseBranch:
    version: str
    branch: str
    commit: str
    base: str  # main's commit the branch was made from
    updated: tuple[str, ...]  # files whose version the release commit changed
    pushed: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def release_repository(settings: Settings) -> Path | None:
    """The Ultra AI repository release branches are made in: the `git_repo` the environments name.
    ConfigError-like InputError when they name different ones (which would be the release?)."""
    repos = {env.git_repo for env in settings.environments.values() if env.git_repo is not None}
    if len(repos) > 1:
        raise InputError(
            f"the environments of {settings.path} name different git_repo folders "
            f"({', '.join(sorted(map(str, repos)))}): release branches need one repository"
        )
    return repos.pop() if repos else None


def _push_wanted(settings: Settings) -> bool:
    return any(env.git_push for env in settings.environments.values() if env.git_repo is not None)


def has_origin(repo: Path) -> bool:
    """Whether the repository has a remote `origin` to push releases to."""
    try:
        return (
            run(["git", "-C", str(repo), "remote", "get-url", "origin"], timeout=_GIT_TIMEOUT_S, check=False).returncode
            == 0
        )
    except CommandFailed:
        return False


def _git(
    repo: Path, *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = _GIT_TIMEOUT_S
) -> str:
    done = run(["git", "-C", str(repo), *args], timeout=timeout, env=env, check=check)
    return done.stdout.strip() if done.returncode == 0 else ""


def _resolve(repo: Path, ref: str) -> str | None:
    return _git(repo, "rev-parse", "-q", "--verify", f"{ref}^{{commit}}", check=False) or None


def release_branches(repo: Path) -> list[tuple[str, str]]:
    """(version, commit) of every `release/vX.Y.Z` branch, newest version first; [] without git."""
    try:
        listed = _git(
            repo, "for-each-ref", "--format=%(refname:strip=2) %(objectname)", f"refs/heads/{PREFIX}", check=False
        )
    except CommandFailed:
        return []
    found = []
    for line in listed.splitlines():
        name, _, commit = line.partition(" ")
        version = name.removeprefix(PREFIX)
        if is_release(version):
            found.append((version, commit))
    return sorted(found, key=lambda vc: release_key(vc[0]), reverse=True)


def branch_commit(repo: Path, version: str) -> str | None:
    """The commit at the tip of `release/<version>`, or None."""
    if version.startswith("-"):
        return None
    try:
        return _resolve(repo, f"refs/heads/{PREFIX}{version}")
    except CommandFailed:
        return None


def _package_json(text: str, version: str) -> str | None:
    """package.json with its top-level "version" set (formatting kept); None when it already is."""
    try:
        data = json.loads(text)
    except ValueError:
        raise OperationError("package.json on main is not valid JSON: its version cannot be updated") from None
    if not isinstance(data, dict):
        raise OperationError("package.json on main is not a JSON object")
    if data.get("version") == version:
        return None
    if isinstance(data.get("version"), str):
        # The first "version" key at the object's top level is the package's: nested objects come
        # after it in every package.json we write; json.loads confirmed the old value.
        old = json.dumps(data["version"])
        pattern = re.compile(r'("version"\s*:\s*)' + re.escape(old))
        if pattern.search(text):
            return pattern.sub(lambda m: m[1] + json.dumps(version), text, count=1)
    data["version"] = version
    return json.dumps(data, indent=2) + "\n"


def _updated_files(repo: Path, base: str, version: str) -> dict[str, tuple[str, str]]:
    """path -> (mode, new text) of the files on main whose version this release changes: package.json
    (npm versions have no "v") and the env files git tracks at the top (`.env.example`,
    `.env.<environment>` templates). Env files git does not track are never added: they hold
    secrets, and deploys write their version themselves."""
    changed: dict[str, tuple[str, str]] = {}
    for line in _git(repo, "ls-tree", base).splitlines():
        meta, _, path = line.partition("\t")
        mode, kind, blob = meta.split()
        if kind != "blob" or not (path == "package.json" or path.startswith(".env")):
            continue
        text = run(["git", "-C", str(repo), "cat-file", "blob", blob], timeout=_GIT_TIMEOUT_S).stdout
        if path == "package.json":
            new = _package_json(text, version.removeprefix("v"))
        elif VERSION_KEY in parse_env_text(text, source=path):
            new = with_values(text, {VERSION_KEY: version})
            new = None if new.rstrip("\n") == text.rstrip("\n") else new
        else:
            new = None  # a template that names no version: nothing to update
        if new is not None:
            changed[path] = (mode, new)
    return changed


def create_release_branch(
    settings: Settings, version: str, *, author: str = "ultra-ops", log: Log | None = None
) -> ReleaseBranch:
    """Make `release/<version>` from main: one commit writing the version into package.json and the
    tracked env files (none when nothing names a version), pushed to origin where git_push is set and
    the repository has that remote."""
    log = log or NullLog()
    validate_tag(version)
    release_key(version)
    repo = release_repository(settings)
    if repo is None:
        raise InputError(f"no git_repo in {settings.path}: release branches need the Ultra AI repository")
    branch = PREFIX + version
    base = _resolve(repo, f"refs/heads/{MAIN}")
    if base is None:
        raise InputError(f"{repo} has no branch {MAIN} to make {branch} from")
    existing = branch_commit(repo, version)
    if existing is not None:
        raise InputError(f"{branch} already exists in {repo} (commit {existing[:12]})")
    changed = _updated_files(repo, base, version)
    commit = base
    if changed:
        with tempfile.TemporaryDirectory(prefix="ultra-ops-release-") as tmp:
            index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            _git(repo, "read-tree", base, env=index)
            for path, (mode, text) in changed.items():
                staged = Path(tmp) / "blob"
                staged.write_text(text)
                blob = _git(repo, "hash-object", "-w", f"--path={path}", str(staged))
                _git(repo, "update-index", "--cacheinfo", f"{mode},{blob},{path}", env=index)
            tree = _git(repo, "write-tree", env=index)
        who = {**_COMMITTER, "GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": f"{author}@ultra-ops"}
        commit = _git(
            repo,
            "commit-tree",
            tree,
            "-p",
            base,
            "-m",
            f"Release {version}\n\nVersion {version} in {', '.join(changed)}.",
            env=who,
        )
    # The empty old value: update-ref refuses when the branch appeared meanwhile.
    try:
        _git(repo, "update-ref", "-m", f"ultra-ops: release {version}", f"refs/heads/{branch}", commit, "")
    except CommandFailed as exc:
        raise OperationError(f"creating {branch} failed: {exc}") from None
    log.info(
        f"{branch} created in {repo} at {commit[:12]} from {MAIN} {base[:12]}"
        + (f", version set in {', '.join(changed)}" if changed else ", no file names a version")
    )
    pushed = False
    if _push_wanted(settings) and not has_origin(repo):
        log.warning(f"git_push is set but {repo} has no remote origin: {branch} not pushed")
    elif _push_wanted(settings):
        try:
            _git(repo, "push", "origin", f"refs/heads/{branch}:refs/heads/{branch}", timeout=_GIT_PUSH_TIMEOUT_S)
        except (CommandFailed, KeyboardInterrupt):
            # Left as it was: the branch goes again (only if it still is ours), so a retry can make it.
            _git(repo, "update-ref", "-d", f"refs/heads/{branch}", commit, check=False)
            raise
        pushed = True
        log.info(f"{branch} pushed to origin")
    return ReleaseBranch(version, branch, commit, base, tuple(changed), pushed)
