"""Git repositories made in a test: an Ultra AI repository on main with a bare remote it pushes to."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

PACKAGE = {
    "name": "ultra-ai",
    "version": "1.0.0",
    "private": True,
    "dependencies": {"left-pad": "1.3.0"},
    "engines": {"node": ">=20"},
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()


def make_repo(tmp_path: Path) -> tuple[Path, Path]:
    """An Ultra AI repository on main with package.json, an env template and a changelog; and a bare
    remote `origin` it pushes to."""
    repo, remote = tmp_path / "ultra-ai", tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, timeout=30)
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True, timeout=30)
    (repo / "package.json").write_text(json.dumps(PACKAGE, indent=2) + "\n")
    (repo / ".env.example").write_text("# copy to .env.<environment>\nULTRA_VERSION=v1.0.0\nULTRA_AUTH_USER=admin\n")
    (repo / "CHANGELOG.md").write_text("# Changelog\n\n## 1.1.0\n- faster prompts\n")
    git(repo, "add", "package.json", ".env.example", "CHANGELOG.md")
    git(repo, "commit", "-q", "-m", "Ultra AI 1.0.0")
    git(repo, "remote", "add", "origin", str(remote))
    return repo, remote
