"""`ultra-ops demo --compose`: the release cycle through staging and production as Docker Compose
projects on this machine (deploy/ultra_ops.compose-local.toml), each image built from its release's
commit in the stand-in Ultra AI repository.

Two releases are made first (the changelog on main names each, then its release branch), versions
above every one the repository and the environments have had, so the demo runs again and again.
Then: both environments prepared (env files, passwords, PostgreSQL and Redis containers), the first
release deployed to staging, verified, deployed to production (tagged there), the second deployed to
staging, and staging rolled back to the backup that deploy took and verified again.
"""

from __future__ import annotations

from collections.abc import Callable

from ultra_ops.demo import Step, run_steps
from ultra_ops.demo_calendar import ensure_repository, is_standin, next_version, plan_release
from ultra_ops.engine.deployed import deployed_version
from ultra_ops.engine.errors import InputError
from ultra_ops.engine.paths import REPOSITORY_ROOT
from ultra_ops.engine.release.branches import release_repository
from ultra_ops.engine.settings import Settings
from ultra_ops.engine.versions import PRODUCTION, STAGING

LOCAL_COMPOSE_CONFIG = REPOSITORY_ROOT / "deploy" / "ultra_ops.compose-local.toml"


def compose_steps(first: str, second: str, config_args: list[str]) -> list[Step]:
    def on(env: str) -> list[str]:
        return ["--environment", env, *config_args]

    return [
        (f"make release {first}", ["release-branch", "--tag", first, *config_args]),
        (f"make release {second}", ["release-branch", "--tag", second, *config_args]),
        (f"prepare {STAGING}", ["init", *on(STAGING)]),
        (f"prepare {PRODUCTION}", ["init", *on(PRODUCTION)]),
        (f"deploy {first} to {STAGING} (image built from its commit)", ["deploy", *on(STAGING), "--tag", first]),
        (f"verify {STAGING}", ["verify", *on(STAGING)]),
        (f"deploy {first} to {PRODUCTION}", ["deploy", *on(PRODUCTION), "--tag", first]),
        (f"deploy {second} to {STAGING}", ["deploy", *on(STAGING), "--tag", second]),
        (f"status of {STAGING}'s containers", ["maintenance", "status", *on(STAGING)]),
        (f"roll {STAGING} back to its newest backup ({first})", ["rollback", *on(STAGING), "--yes"]),
        (f"verify {STAGING}", ["verify", *on(STAGING)]),
    ]


def run_compose_demo(
    settings: Settings,
    config_args: list[str],
    *,
    run: Callable[[list[str]], int],
    progress: Callable[[str], None],
    out: Callable[[str], None],
) -> int:
    """Run the steps with `run` (the CLI's main); stop at the first that fails, with its exit code."""
    missing = [env for env in (STAGING, PRODUCTION) if env not in settings.environments]
    if missing or any(env.runtime != "compose" for env in settings.environments.values()):
        raise InputError(f"demo --compose needs compose environments staging and production; {settings.path} has not")
    repo = release_repository(settings)
    if repo is None:
        raise InputError(f"demo --compose builds from the Ultra AI repository: no git_repo in {settings.path}")
    for line in ensure_repository(repo):
        progress(line)
    if not is_standin(repo):
        raise InputError(f"git_repo {repo} is not the demo's stand-in repository: demo --compose would commit to it")
    # The changelog on main names each release before its branch is made, as the checklist asks.
    first = next_version(settings, repo)
    plan_release(repo, first)
    major, minor, _ = first.removeprefix("v").split(".")
    second = f"v{major}.{int(minor) + 1}.0"
    plan_release(repo, second)
    if (code := run_steps(compose_steps(first, second, config_args), run=run, progress=progress)) != 0:
        return code
    out("")
    for name in (STAGING, PRODUCTION):
        env = settings.environment(name)
        url = env.verify.health_urls[0] if env.verify.health_urls else "-"
        out(f"{name:<12} {deployed_version(env) or '-':<8} {url}  (compose project {env.compose_project})")
    return 0
