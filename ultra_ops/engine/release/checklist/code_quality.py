"""The checklist's code quality items: tests, review, critical bugs, docs, the release commit on main."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ultra_ops.engine.errors import CommandFailed
from ultra_ops.engine.release.branches import MAIN
from ultra_ops.engine.release.checklist.report import (
    CODE,
    SEVERE,
    ChecklistItem,
    Status,
    checked,
    git,
    http_client,
    httpx,
    not_checked,
)
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Environment
from ultra_ops.engine.versions import is_release

# Code quality -----------------------------------------------------------------------------------


def tests_item(env: Environment, version: str | None, redact: Redactor, *, skip: bool) -> ChecklistItem:
    from ultra_ops.engine.release.deploy import run_test_command

    name = "automated tests pass"
    if skip:
        return ChecklistItem(CODE, name, Status.WARN, "skipped (--skip-tests): not recommended for production")
    if not env.test_command:
        return not_checked(CODE, name, f"no test_command configured for {env.name}")
    try:
        tail = run_test_command(env, version or "", redact)
    except CommandFailed as exc:
        return checked(CODE, name, False, redact(str(exc)))
    return checked(CODE, name, True, f"{' '.join(env.test_command)} exited 0" + (f": {tail}" if tail else ""))


def review_item() -> ChecklistItem:
    return not_checked(
        CODE,
        "code reviewed and approved",
        "reviews happen in pull requests, which ultra_ops cannot see; release branches are "
        "made from main, where only reviewed pull requests merge",
    )


def _open_critical(data: Any) -> list[str]:
    """Titles of the open critical bugs in a list of issues ({"issues": [...]} or a list), each with
    `title`, `severity` or `labels`, and `state` (open when absent)."""
    issues = data.get("issues", data.get("bugs")) if isinstance(data, dict) else data
    if not isinstance(issues, list):
        raise ValueError('expected a list of issues (or {"issues": [...]})')
    found = []
    for issue in issues:
        if not isinstance(issue, dict):
            raise ValueError("every issue must be an object")
        labels = [str(x.get("name", x) if isinstance(x, dict) else x).lower() for x in issue.get("labels", [])]
        critical = str(issue.get("severity", "")).lower() in SEVERE or any(s in labels for s in SEVERE)
        if critical and str(issue.get("state", "open")).lower() == "open":
            found.append(str(issue.get("title") or issue.get("id") or "untitled"))
    return found


def critical_bugs_item(env: Environment, redact: Redactor) -> ChecklistItem:
    name = "no known critical bugs"
    source = env.checklist.critical_bugs
    if source is None:
        return not_checked(
            CODE,
            name,
            "no critical_bugs source configured ([environments."
            f"{env.name}.checklist] critical_bugs = a JSON file or URL of open bugs)",
        )
    try:
        if source.startswith(("http://", "https://")):
            with http_client(env) as client:
                response = client.get(source)
            if response.status_code != 200:
                return checked(CODE, name, False, f"{redact(source)} answered {response.status_code}")
            data = response.json()
        else:
            data = json.loads(Path(source).read_text())
        bugs = _open_critical(data)
    except (OSError, ValueError, httpx.HTTPError) as exc:
        return checked(CODE, name, False, redact(f"cannot read {source}: {type(exc).__name__}: {exc}"))
    if bugs:
        return checked(CODE, name, False, f"{len(bugs)} open critical in {redact(source)}: " + "; ".join(bugs[:5]))
    return checked(CODE, name, True, f"none open in {redact(source)}")


def _release_ref(env: Environment, version: str) -> str | None:
    """The git ref of release `version`: its tag, else its release branch."""
    assert env.git_repo is not None
    for ref in (f"refs/tags/{version}", f"refs/heads/release/{version}"):
        if git(env.git_repo, "rev-parse", "-q", "--verify", f"{ref}^{{commit}}")[0] == 0:
            return ref
    return None


def docs_item(env: Environment, version: str | None) -> ChecklistItem:
    name = "changelog or docs name the version"
    if env.git_repo is None or not env.git_repo.is_dir():
        return not_checked(CODE, name, f"no git_repo folder for {env.name} ({env.git_repo or 'not configured'})")
    if not version:
        return not_checked(CODE, name, "no version given (--tag)")
    if not is_release(version):
        return not_checked(CODE, name, f"{version} is not a release version vX.Y.Z (a development build)")
    if not env.checklist.docs:
        return not_checked(CODE, name, "no docs configured ([checklist] docs)")
    ref = _release_ref(env, version)
    bare = version.removeprefix("v")
    looked: list[str] = []
    missing: list[str] = []
    for doc in env.checklist.docs:
        if ref is not None:
            code, text = git(env.git_repo, "show", f"{ref}:{doc}")
            where = f"{doc} at {ref.removeprefix('refs/heads/').removeprefix('refs/tags/')}"
        else:
            path = env.git_repo / doc
            code, text = (0, path.read_text(errors="replace")) if path.is_file() else (1, "")
            where = f"{doc} in the working tree"
        if code != 0:
            missing.append(where)
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if version in line or bare in line.split() or f"[{bare}]" in line:
                return checked(CODE, name, True, f"{where} line {number}: {line.strip()[:100]}")
        looked.append(f"{where}: no mention of {version}")
    if not looked:
        return not_checked(CODE, name, f"none of the docs exists: {', '.join(missing)}")
    return checked(CODE, name, False, "; ".join(looked + [f"{m}: missing" for m in missing]))


def on_main_item(env: Environment, version: str | None) -> ChecklistItem:
    name = "release commit is on main"
    if env.git_repo is None or not env.git_repo.is_dir():
        return not_checked(CODE, name, f"no git_repo folder for {env.name} ({env.git_repo or 'not configured'})")
    if not version:
        return not_checked(CODE, name, "no version given (--tag)")
    repo = env.git_repo
    ref = _release_ref(env, version)
    if ref is None:
        return not_checked(
            CODE,
            name,
            f"no tag {version} and no branch release/{version} in {repo} (make one "
            f"with ultra-ops release-branch --tag {version})",
        )
    code, commit = git(repo, "rev-parse", f"{ref}^{{commit}}")
    commit = commit.strip()
    if git(repo, "merge-base", "--is-ancestor", commit, MAIN)[0] == 0:
        return checked(CODE, name, True, f"{commit[:12]} ({ref.split('/', 2)[2]}) is on {MAIN}")
    code, base = git(repo, "merge-base", commit, MAIN)
    if code != 0:
        return checked(CODE, name, False, f"{commit[:12]} ({ref.split('/', 2)[2]}) shares no history with {MAIN}")
    # A release branch carries its version commit on top of main: what it adds must be only that.
    code, extra = git(repo, "rev-list", "--count", f"{base.strip()}..{commit}")
    ahead = int(extra.strip() or 0)
    on_branch = git(repo, "merge-base", "--is-ancestor", commit, f"refs/heads/release/{version}")[0] == 0
    if on_branch and ahead <= 1:
        return checked(
            CODE,
            name,
            True,
            f"{ref.split('/', 2)[2]} {commit[:12]} is {MAIN} {base.strip()[:12]} plus "
            f"release/{version}'s version commit",
        )
    return checked(
        CODE,
        name,
        False,
        f"{commit[:12]} ({ref.split('/', 2)[2]}) has {ahead} commit(s) that are not on "
        f"{MAIN} (forked at {base.strip()[:12]})",
    )
