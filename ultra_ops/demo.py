"""`ultra-ops demo`: one release taken through development, staging and production on this machine.

Every step is an `ultra-ops` command, so every deploy, verify and rollback is a Dagster run
recorded as a launch from the UI is: v1.0.0 to development, staging and production, each
verified; then v1.1.0 to development and staging, and staging rolled back to its newest backup
(the one its v1.1.0 deploy took, holding its v1.0.0 state) and verified again. Then the release
calendar (demo_calendar): a release branch made, deployed by the schedules' ticks, approved, tagged,
with the webhook's notifications. With `--environment ENV`, a cycle on that one environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ultra_ops.demo_calendar import ensure_repository, run_calendar_demo
from ultra_ops.engine.deployed import deployed_version
from ultra_ops.engine.errors import InputError
from ultra_ops.engine.release.branches import release_repository
from ultra_ops.engine.release.downgrade import is_downgrade
from ultra_ops.engine.settings import Settings
from ultra_ops.engine.versions import DEVELOPMENT, PROMOTION, STAGING

FIRST, NEXT = "v1.0.0", "v1.1.0"

Step = tuple[str, list[str]]


def promotion_steps(config_args: list[str]) -> list[Step]:
    """The release through all three environments, then a rollback of staging."""

    def on(env: str) -> list[str]:
        return ["--environment", env, *config_args]

    steps: list[Step] = [(f"prepare {env}", ["init", *on(env)]) for env in PROMOTION]
    for env in PROMOTION:
        steps += [
            (f"deploy {FIRST} to {env}", ["deploy", *on(env), "--tag", FIRST, "--skip-build"]),
            (f"verify {env}", ["verify", *on(env)]),
        ]
    steps += [
        (f"deploy {NEXT} to {env}", ["deploy", *on(env), "--tag", NEXT, "--skip-build"])
        for env in (DEVELOPMENT, STAGING)
    ]
    steps += [
        (f"list {STAGING}'s backups", ["backups", "list", *on(STAGING)]),
        (f"roll {STAGING} back to its newest backup ({FIRST})", ["rollback", *on(STAGING), "--yes"]),
        (f"verify {STAGING}", ["verify", *on(STAGING)]),
    ]
    return steps


def single_steps(env: str, config_args: list[str]) -> list[Step]:
    """A release cycle on one environment: deploy, verify, deploy the next, roll back, verify."""
    on = ["--environment", env, *config_args]
    return [
        (f"prepare {env}", ["init", *on]),
        (f"deploy {FIRST}", ["deploy", *on, "--tag", FIRST, "--skip-build"]),
        ("verify", ["verify", *on]),
        (f"deploy {NEXT}", ["deploy", *on, "--tag", NEXT, "--skip-build"]),
        ("list backups", ["backups", "list", *on]),
        (f"roll back to the newest backup ({FIRST})", ["rollback", *on, "--yes"]),
        ("verify", ["verify", *on]),
    ]


def _starting_over(settings: Settings, argv: list[str]) -> list[str]:
    """A demo run again finds newer versions in place: its first deploys say so, as a downgrade."""
    if argv[0] != "deploy":
        return argv
    env = settings.environment(argv[argv.index("--environment") + 1])
    if not is_downgrade(env.name, deployed_version(env), argv[argv.index("--tag") + 1]):
        return argv
    return [*argv, "--allow-downgrade", "--reason", "the demo starts over"]


def run_steps(
    steps: list[Step],
    *,
    run: Callable[[list[str]], int],
    progress: Callable[[str], None],
    prepare: Callable[[list[str]], list[str]] = lambda argv: argv,
) -> int:
    """Each step's command in turn (as `prepare` completes it just before it runs); the exit code
    of the first that fails, else 0."""
    for title, planned in steps:
        argv = prepare(planned)
        progress(f"== {title}: ultra-ops {' '.join(argv)}")
        code = run(argv)
        if code != 0:
            progress(f"demo stopped at '{title}' (exit {code})")
            return code
    return 0


def run_demo(
    settings: Settings,
    environment: str | None,
    config_args: list[str],
    *,
    run: Callable[[list[str]], int],
    progress: Callable[[str], None],
    out: Callable[[str], None],
) -> int:
    """Run the steps with `run` (the CLI's main); stop at the first that fails, with its exit code."""
    if environment is not None:
        names = [settings.environment(environment).name]
        steps = single_steps(environment, config_args)
    else:
        missing = [env for env in PROMOTION if env not in settings.environments]
        if missing:
            raise InputError(
                f"the demo takes a release through {', '.join(PROMOTION)}, but {settings.path} "
                f"does not name {', '.join(missing)} (--environment ENV runs it on one)"
            )
        names = list(PROMOTION)
        steps = promotion_steps(config_args)
    repo = release_repository(settings) if environment is None else None
    if repo is not None:
        for line in ensure_repository(repo):
            progress(line)
    if (code := run_steps(steps, run=run, progress=progress, prepare=lambda argv: _starting_over(settings, argv))) != 0:
        return code
    if environment is None:
        code = run_calendar_demo(settings, config_args, run=run, progress=progress, out=out)
        if code != 0:
            progress(f"demo stopped in the release calendar (exit {code})")
            return code
    out("")
    for name in names:
        env = settings.environment(name)
        url = env.verify.health_urls[0] if env.verify.health_urls else "-"
        out(f"{name:<12} {deployed_version(env) or '-':<8} {url}")
    out(f"run `dagster dev` with DAGSTER_HOME={os.environ.get('DAGSTER_HOME', '')} to see every run")
    return 0
