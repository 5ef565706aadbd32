"""The release's source: its commit in the Ultra AI repository, exported into a temporary folder,
so an image is built from exactly what was released (the tag's commit, else the release branch's
tip), never from whatever the working copy holds."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ultra_ops.engine.errors import CommandFailed, OperationError
from ultra_ops.engine.release.git_tags import commit_of
from ultra_ops.engine.secrets import Log
from ultra_ops.engine.settings import Environment
from ultra_ops.engine.shell import run

_EXPORT_TIMEOUT_S = 300.0


@contextmanager
def release_source(env: Environment, version: str, *, log: Log) -> Iterator[Path | None]:
    """The folder holding `version`'s commit (removed afterwards); None where the environment has
    no repository or the version no tag or release branch: then the compose file's context is used."""
    commit = commit_of(env, version)
    if commit is None:
        log.info(f"no commit of {version} in {env.git_repo or 'a git_repo'}: building from the compose file's context")
        yield None
        return
    with tempfile.TemporaryDirectory(prefix=f"ultra-source-{env.name}-") as tmp:
        archive, source = Path(tmp) / "source.tar", Path(tmp) / "source"
        source.mkdir()
        try:
            run(
                ["git", "-C", str(env.git_repo), "archive", "--format=tar", "-o", str(archive), commit],
                timeout=_EXPORT_TIMEOUT_S,
            )
            run(["tar", "-xf", str(archive), "-C", str(source)], timeout=_EXPORT_TIMEOUT_S)
        except CommandFailed as exc:
            raise OperationError(f"exporting {version} ({commit[:12]}) from {env.git_repo} failed: {exc}") from None
        archive.unlink()
        log.info(f"building {version} from commit {commit[:12]} of {env.git_repo}")
        yield source
