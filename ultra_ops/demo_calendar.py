"""The release calendar part of `ultra-ops demo`: a release made, taken to staging by the staging
schedule's tick, refused for production until approved, approved, deployed to production by the
production tick and tagged, with every notification received by a webhook on loopback.

The schedules are the code location's own, evaluated with `build_schedule_context` at their next
tick times (a coming Tuesday and Thursday), and the run each returns is launched as the daemon would
launch it. The demo plays the calendar forward, so the approval is given for the production tick
(`ultra-ops approve --at`: it counts from an hour before that tick) rather than from now, which
would have expired by then.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

from ultra_ops.engine.calendar.approvals import production_ticks
from ultra_ops.engine.release.branches import release_branches, release_repository
from ultra_ops.engine.release.records import find_releases
from ultra_ops.engine.settings import CONFIG_ENV_VAR, Settings
from ultra_ops.engine.shell import run as shell
from ultra_ops.engine.versions import VERSION_KEY, is_release, release_key
from ultra_ops.sample_service.packaging import write_image_source

APPROVER = "release-manager"
_GIT = ["git", "-c", "user.name=Ultra AI developer", "-c", "user.email=dev@ultra-ai.example"]


class Webhook:
    """A Slack-style webhook on a free loopback port that keeps every JSON body it receives."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.bodies.append(json.loads(data or b"{}"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/demo"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _git(repo: Path, *args: str) -> str:
    return shell([*_GIT, "-C", str(repo), *args], timeout=60).stdout.strip()


MARKER = "ultra-ops-demo-standin"  # in .git: this repository is the demo's own, which it may change


def is_standin(repo: Path) -> bool:
    return (repo / ".git" / MARKER).is_file()


def ensure_repository(repo: Path) -> list[str]:
    """The stand-in Ultra AI repository the shipped config names: main with package.json, an env
    template, a changelog and the backend's image source (Dockerfile), and a bare `origin` beside it
    that release tags are pushed to. A repository that exists already is left alone (the calendar
    part then runs only on the demo's), but a stand-in made before the backend had a Dockerfile gets it."""
    if repo.exists():
        return ensure_backend_source(repo)
    origin = repo.parent / f"{repo.name}-origin.git"
    repo.mkdir(parents=True, exist_ok=True)
    shell(["git", "init", "-q", "-b", "main", str(repo)], timeout=60)
    shell(["git", "init", "-q", "--bare", str(origin)], timeout=60)
    (repo / "package.json").write_text(
        json.dumps({"name": "ultra-ai", "version": "1.1.0", "private": True}, indent=2) + "\n"
    )
    (repo / ".env.example").write_text(f"# copy to .env.<environment> and fill in the secrets\n{VERSION_KEY}=v1.1.0\n")
    (repo / "CHANGELOG.md").write_text("# Changelog\n\n## 1.1.0\n- prompt history\n\n## 1.0.0\n- first release\n")
    _git(repo, "add", "package.json", ".env.example", "CHANGELOG.md", *write_image_source(repo))
    _git(repo, "commit", "-q", "-m", "Ultra AI 1.1.0")
    _git(repo, "remote", "add", "origin", str(origin))
    (repo / ".git" / MARKER).write_text("made by ultra-ops demo: release branches, tags and changelog commits\n")
    return [f"created the stand-in Ultra AI repository {repo} (main) with its remote {origin}"]


def ensure_backend_source(repo: Path) -> list[str]:
    """On the stand-in's main: the backend's Dockerfile and source, committed, if they are missing
    (release branches made from then on build as images)."""
    if not is_standin(repo) or (repo / "Dockerfile").is_file():
        return []
    if _git(repo, "rev-parse", "--abbrev-ref", "HEAD") != "main":
        return [f"{repo} is not on main: the backend's Dockerfile was not added"]
    _git(repo, "add", *write_image_source(repo))
    _git(repo, "commit", "-q", "-m", "Backend Dockerfile")
    return [f"added the backend's Dockerfile and source to {repo} (main)"]


def next_version(settings: Settings, repo: Path) -> str:
    """One minor version above every release branch and every version any environment has had."""
    seen = [v for v, _ in release_branches(repo)]
    for env in settings.environments.values():
        seen += [r.version for r in find_releases(env) if r.version and is_release(r.version)]
    major, minor, _ = max((release_key(v) for v in seen), default=(1, 1, 0))
    return f"v{major}.{minor + 1}.0"


def plan_release(repo: Path, version: str) -> None:
    """Release planning on main: the changelog names the coming version (the checklist looks)."""
    changelog = repo / "CHANGELOG.md"
    text = changelog.read_text()
    head, _, rest = text.partition("\n\n")
    changelog.write_text(f"{head}\n\n## {version.removeprefix('v')}\n- faster prompts\n\n{rest}")
    _git(repo, "commit", "-q", "-am", f"Changelog for {version}")


def _local(settings: Settings, when: datetime) -> str:
    return when.astimezone(ZoneInfo(settings.timezone)).strftime("%a %Y-%m-%d %H:%M %Z")


def _evaluate(name: str, when: datetime):  # noqa: ANN202 - dagster's ScheduleExecutionData
    from dagster import DagsterInstance, build_schedule_context

    from ultra_ops.definitions import defs

    schedule = defs.get_repository_def().get_schedule_def(name)
    with DagsterInstance.ephemeral() as scratch:
        context = build_schedule_context(
            instance=scratch, scheduled_execution_time=when, repository_def=defs.get_repository_def()
        )
        return schedule.evaluate_tick(context)


def _launch_request(name: str, request) -> str | None:  # noqa: ANN001 - a dagster RunRequest
    """Launch a tick's RunRequest as the daemon would: its config and tags, marked as the schedule's."""
    from ultra_ops.defs.shared.launch import launch
    from ultra_ops.defs.shared.tags import PARTITION, SCHEDULE

    tags = {**request.tags, PARTITION: str(request.partition_key), SCHEDULE: name}
    result = launch("deploy_job", dict(request.run_config), tags)
    if not result.success:
        print(f"error: {name}'s run {result.run_id} failed: {result.message}", file=sys.stderr, flush=True)
        return None
    return result.run_id


def _notify_end(run_id: str) -> None:
    """What the daemon's release_notification_sensor does when the run ends: tell the webhook."""
    from dagster import DagsterEventType, DagsterInstance, build_run_status_sensor_context

    from ultra_ops.defs.release.sensors import release_sensors

    sensor = next(s for s in release_sensors() if s.name == "release_notification_sensor")
    instance = DagsterInstance.get()
    run = instance.get_run_by_id(run_id)
    event = next(
        e.dagster_event
        for e in instance.all_logs(run_id)
        if e.dagster_event and e.dagster_event_type == DagsterEventType.RUN_SUCCESS
    )
    sensor(
        build_run_status_sensor_context(
            sensor_name=sensor.name, dagster_instance=instance, dagster_run=run, dagster_event=event
        )
    )


def _deploy_from_tick(
    name: str, when: datetime, environment: str, progress: Callable[[str], None], out: Callable[[str], None]
) -> str | None:
    """Evaluate schedule `name` at `when` and launch the deploy it asks for, as the daemon would,
    then tell the webhook as the notification sensor would: the deploy's run id, or None."""
    from ultra_ops.defs.shared.tags import VERSION

    tick = _evaluate(name, when)
    if not tick.run_requests:
        out(f"{environment} tick skipped: {tick.skip_message}")
        return None
    (request,) = tick.run_requests
    progress(f"   it asks for deploy_job {request.tags.get(VERSION)} on {environment}: launching it")
    run_id = _launch_request(name, request)
    if run_id is not None:
        _notify_end(run_id)
    return run_id


def run_calendar_demo(
    settings: Settings,
    config_args: list[str],
    *,
    run: Callable[[list[str]], int],
    progress: Callable[[str], None],
    out: Callable[[str], None],
) -> int:
    """The release calendar, end to end; its exit code (the first failing command's)."""
    repo = release_repository(settings)
    variable = settings.notifications.webhook_url_env
    if repo is None or variable is None:
        out("the config names no git_repo or no [notifications] webhook_url_env: calendar part skipped")
        return 0
    hook = Webhook()
    # The demo stands in for the daemon: the code location it ticks reads the demo's config and
    # webhook the way an operator's would, from the environment.
    chosen = {variable: hook.url, CONFIG_ENV_VAR: str(settings.path)}
    previous = {name: os.environ.get(name) for name in chosen}
    os.environ.update(chosen)
    try:
        return _calendar(settings, repo, config_args, hook, run=run, progress=progress, out=out)
    finally:
        hook.close()
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _calendar(
    settings: Settings,
    repo: Path,
    config_args: list[str],
    hook: Webhook,
    *,
    run: Callable[[list[str]], int],
    progress: Callable[[str], None],
    out: Callable[[str], None],
) -> int:
    for line in ensure_repository(repo):
        progress(line)
    if not is_standin(repo):
        out(
            f"git_repo {repo} is not the demo's stand-in repository: the calendar part would add release "
            "branches, tags and a changelog commit to it, so it is skipped"
        )
        return 0
    version = next_version(settings, repo)
    plan_release(repo, version)
    now = datetime.now(UTC)
    staging_at = min(t.at for t in _upcoming(settings, now) if t.schedule == "staging_release_schedule")
    production_at = production_ticks(settings, staging_at, 1)[0]

    progress(f"== make release {version}: ultra-ops release-branch --tag {version}")
    if (code := run(["release-branch", "--tag", version, *config_args])) != 0:
        return code
    progress("== the calendar now: ultra-ops calendar --weeks 3")
    if (code := run(["calendar", "--weeks", "3", *config_args])) != 0:
        return code

    progress(f"== staging_release_schedule's tick at {_local(settings, staging_at)}")
    if _deploy_from_tick("staging_release_schedule", staging_at, "staging", progress, out) is None:
        return 1

    progress(f"== production_release_schedule's tick at {_local(settings, production_at)}, before any approval")
    tick = _evaluate("production_release_schedule", production_at)
    out(f"production tick: {'skip: ' + tick.skip_message if tick.skip_message else 'it would deploy'}")
    if tick.run_requests:
        return 1
    progress("== in the UI: ultra-ops calendar --record (the release_calendar and pending_decisions assets)")
    if (code := run(["calendar", "--weeks", "3", "--record", *config_args])) != 0:
        return code

    approve_at = production_at - timedelta(hours=1)
    progress(f"== {APPROVER} approves {version} for that tick (counting from {_local(settings, approve_at)})")
    if (
        code := run(
            [
                "approve",
                "--environment",
                "production",
                "--tag",
                version,
                "--by",
                APPROVER,
                "--at",
                approve_at.isoformat(),
                *config_args,
            ]
        )
    ) != 0:
        return code

    progress(f"== production_release_schedule's tick at {_local(settings, production_at)}, approved")
    run_id = _deploy_from_tick("production_release_schedule", production_at, "production", progress, out)
    if run_id is None:
        return 1

    production = settings.environments["production"]
    (record,) = find_releases(production, run_id=run_id)
    out("")
    out(f"production runs {record.version}, deployed by {record.launched_by}, commit {record.commit}")
    out("git tag: " + _git(repo, "tag", "-n1", "-l", version))
    origin = repo.parent / f"{repo.name}-origin.git"
    if origin.is_dir():
        out(
            f"{origin.name} has: "
            + " ".join(line.split()[1] for line in _git(origin, "show-ref").splitlines() if version in line)
        )
    out(f"the webhook ({hook.url}) received {len(hook.bodies)} notifications:")
    for body in hook.bodies:
        out(f"  [{body.get('event')}] " + body.get("text", "").replace("\n", " | "))
    return 0


def _upcoming(settings: Settings, now: datetime):  # noqa: ANN202 - a list of ticks
    from ultra_ops.engine.calendar.ticks import upcoming

    return upcoming(settings, now, 2, "staging")
