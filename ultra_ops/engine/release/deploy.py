"""Deploy: the release document's deployment, one function per step.

validate input → pre-release checklist → tests → backup → build → push → migrate → up →
wait healthy → verify → tag → record. Once the backup is taken, any failure that leaves the
environment changed (migrate, up, health, verify) rolls back to that backup before the error
is raised, so a failed deploy leaves the environment as it was. Every step after the plan runs
inside `failure_recorded`, so a failed deploy leaves one release record saying how it ended.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ultra_ops.engine import runs
from ultra_ops.engine.backups.create import create_backup
from ultra_ops.engine.backups.retention import prune_backups
from ultra_ops.engine.backups.store import DEPLOY_LABEL, BackupInfo
from ultra_ops.engine.clock import utc_timestamp
from ultra_ops.engine.deployed import deployed_version, mark_deployed
from ultra_ops.engine.envfile import read_env_file
from ultra_ops.engine.errors import CommandFailed, InputError, OperationError, UltraOpsError
from ultra_ops.engine.hosts.lock import LockLost
from ultra_ops.engine.hosts.outage import host_lost
from ultra_ops.engine.hosts.ssh import HostError, SshHost
from ultra_ops.engine.inputs import validate_tag
from ultra_ops.engine.release.git_tags import tag_release
from ultra_ops.engine.release.interrupts import described, is_interrupt, settled_on_interrupt, uninterrupted
from ultra_ops.engine.release.migrate import apply_migrations
from ultra_ops.engine.release.records import (
    ReleaseRecord,
    ReleaseStatus,
    kept_for_rollback,
    operation_record,
    record_release,
    recording_failure,
    with_outcome,
)
from ultra_ops.engine.release.rollback import rollback
from ultra_ops.engine.release.source import release_source
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.runtimes.compose import registry_prefix
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment, Settings
from ultra_ops.engine.shell import run
from ultra_ops.engine.verify.report import VerifyReport
from ultra_ops.engine.verify.statements import save_baseline
from ultra_ops.engine.verify.window import WindowReport, verify_window_or_fail
from ultra_ops.engine.versions import DEVELOPMENT, PRODUCTION, VERSION_KEY, development_version

if TYPE_CHECKING:
    from ultra_ops.engine.settings.notifications import NotificationSettings

# host[:port][/path]: what `docker push` accepts as a registry prefix, and nothing a shell would read.
_REGISTRY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})(?::\d{1,5})?(?:/[A-Za-z0-9._-]+){0,8}$")


@dataclass(frozen=True)
class DeployRequest:
    """A validated deploy: what the operator asked for, plus what the steps learn on the way."""

    environment: str
    tag: str
    skip_tests: bool = False
    skip_build: bool = False
    compose_file: str | None = None
    registry: str | None = None
    run_id: str | None = None
    launched_by: str | None = None
    started_at: str | None = None  # ISO-8601 UTC
    backup_id: str | None = None
    previous_version: str | None = None  # what ran before: set by the backup step
    emergency_reason: str | None = None  # an emergency fix: why it bypassed the calendar and the gate
    downgrade: str | None = None  # an allowed downgrade: "downgrade from <version>: <reason>"
    tests_passed: bool = False  # the pre-release checklist ran the test command and it passed

    @property
    def compose_path(self) -> Path | None:
        return Path(self.compose_file) if self.compose_file else None


def resolve_tag(env: Environment, tag: str | None, now: datetime | None = None) -> str:
    """The tag to deploy: the one given, checked; on development an empty tag gets a dated dev
    version, as the release document deploys development without one."""
    if tag:
        validate_tag(tag)
        return tag
    if env.name != DEVELOPMENT:
        raise InputError(f"a release tag is required for {env.name} deploys (e.g. v1.2.3)")
    return development_version(now or datetime.now(UTC))


def plan_deploy(
    settings: Settings,
    environment: str,
    tag: str,
    *,
    skip_tests: bool = False,
    skip_build: bool = False,
    compose_file: str | None = None,
    registry: str | None = None,
    run_id: str | None = None,
    launched_by: str | None = None,
    started_at: str | None = None,
    emergency_reason: str | None = None,
) -> DeployRequest:
    """Check every input before anything runs; raise InputError naming the first bad one."""
    env = settings.environment(environment)
    validate_tag(tag)
    if compose_file:
        path = Path(compose_file)
        if not path.is_file():
            raise InputError(f"compose file {compose_file!r} does not exist")
        compose_file = str(path.resolve())
    if registry is not None:
        registry = registry.rstrip("/")
        if not _REGISTRY.fullmatch(registry):
            raise InputError(f"registry {registry[:80]!r} is not a registry address (host[:port][/path])")
    return DeployRequest(
        environment=env.name,
        tag=tag,
        skip_tests=skip_tests,
        skip_build=skip_build,
        compose_file=compose_file,
        registry=registry,
        run_id=run_id,
        launched_by=launched_by,
        started_at=started_at or utc_timestamp(),
        emergency_reason=emergency_reason,
    )


def run_test_command(env: Environment, version: str, redact: Redactor) -> str:
    """Run the environment's test command; its last line of output, or CommandFailed (redacted)."""
    # As the services see it: the basics, the variables this environment's config names and its
    # env file, never another environment's.
    done = run(
        env.test_command,
        cwd=env.config_file.parent,
        timeout=3600,
        redact=redact,
        environment=env,
        env={**read_env_file(env.env_file), VERSION_KEY: version, "ULTRA_ENVIRONMENT": env.name},
    )
    lines = (done.stdout or done.stderr or "").strip().splitlines()
    return redact(lines[-1][:200]) if lines else ""


def run_tests(env: Environment, req: DeployRequest, *, log: Log, redact: Redactor) -> str:
    if req.skip_tests:
        message = f"tests skipped for {req.tag} on {env.name} (--skip-tests)"
        if env.name == PRODUCTION:
            log.warning(message + ": not recommended for production")
        else:
            log.info(message)
        return "skipped"
    if not env.test_command:
        log.info(f"no test command configured for {env.name}")
        return "none configured"
    if req.tests_passed:
        log.info(f"tests of {req.tag} passed in the pre-release checklist of this run: not run twice")
        return "passed"
    log.info("running tests: " + " ".join(env.test_command))
    try:
        run_test_command(env, req.tag, redact)
    except CommandFailed as exc:
        raise OperationError(f"tests failed, {req.tag} not deployed: {exc}") from None
    return "passed"


def backup(env: Environment, req: DeployRequest, *, log: Log, redact: Redactor) -> DeployRequest:
    previous = deployed_version(env)
    info: BackupInfo = create_backup(
        env, version=previous, label=f"{DEPLOY_LABEL} {req.tag}", kind="deploy", log=log, redact=redact
    )
    log.info(f"backup {info.id} taken of {env.name} at {previous or 'no version'}")
    # The deploy holds the environment's lock: no restore is reading a backup retention removes.
    prune_backups(env, protected=kept_for_rollback(env), log=log)
    return replace(req, backup_id=info.id, previous_version=previous)


def build(env: Environment, req: DeployRequest, *, log: Log, redact: Redactor) -> str:
    if req.skip_build:
        log.info("build skipped (--skip-build)")
        return "skipped"
    runtime = get_runtime(env, compose_file=req.compose_path, log=log, redact=redact)
    if env.runtime != "compose" and req.compose_path is None:
        runtime.build(req.tag)
        return "built"
    # An image is built from the release's commit in the Ultra AI repository, where there is one.
    with release_source(env, req.tag, log=log) as source:
        runtime.build(req.tag, context=source)  # type: ignore[call-arg] - the compose runtime's
    return "built"


def push(env: Environment, req: DeployRequest, *, log: Log, redact: Redactor) -> str:
    """Push the built image to the registry, then, for an environment on a host of its own, bring it
    there (pulled from the registry, else streamed over ssh): before the migrations, so a failed
    transfer changes nothing."""
    outcome = _push(env, req, log=log, redact=redact)
    if env.host is None:
        return outcome
    runtime = get_runtime(env, compose_file=req.compose_path, registry=req.registry, log=log, redact=redact)
    delivered = runtime.deliver(req.tag, req.registry)  # type: ignore[attr-defined] - hosts run compose
    return "; ".join([outcome, *delivered])


def _push(env: Environment, req: DeployRequest, *, log: Log, redact: Redactor) -> str:
    if not req.registry:
        log.info("no --registry given: nothing pushed")
        return "skipped"
    runtime = get_runtime(env, compose_file=req.compose_path, log=log, redact=redact)
    if env.runtime != "compose" and req.compose_path is None:
        runtime.push(req.tag, req.registry)
        return "pushed"
    # Tagged with the registry from the same source the build step used (its layers are cached).
    with release_source(env, req.tag, log=log) as source:
        runtime.push(req.tag, req.registry, context=source)  # type: ignore[call-arg] - the compose runtime's
    return "pushed"


def deploy_record(
    env: Environment, req: DeployRequest, status: ReleaseStatus, reason: str | None = None
) -> ReleaseRecord:
    """The record of this deploy: the tag it deployed (or tried to) over the version that ran
    before, which the backup step notes."""
    return operation_record(
        env,
        "deploy",
        req,
        status,
        version=req.tag,
        previous_noted=req.backup_id is not None,
        reason=_with_notes(req, reason),
    )


def _with_notes(req: DeployRequest, reason: str | None) -> str | None:
    """An emergency deploy's record keeps why it bypassed the calendar, an allowed downgrade why the
    older version runs, whatever the outcome."""
    notes = [f"emergency: {req.emergency_reason}"] if req.emergency_reason else []
    notes += [req.downgrade] if req.downgrade else []
    return "; ".join([*notes, *([reason] if reason else [])]) or None


@contextmanager
def failure_recorded(
    env: Environment, req: DeployRequest, *, redact: Redactor, log: Log | None = None
) -> Iterator[None]:
    """Around every deploy step after the plan: a failure leaves one record, `failed` (nothing was
    rolled back), or `rolled_back` / `rollback_failed` after an automatic rollback, with the reason.
    An interrupt where no automatic rollback follows is settled first (interrupts.py), `interrupted`."""
    log = log or NullLog()
    with (
        recording_failure(
            env, lambda outcome, reason: deploy_record(env, req, outcome, reason), redact=redact, log=log
        ),
        settled_on_interrupt(
            env,
            described(env, "deploy", req.tag, None),
            run_id=req.run_id,
            compose_file=req.compose_path,
            log=log,
            redact=redact,
        ),
    ):
        yield


def left_on_lost_host(
    env: Environment, req: DeployRequest, step: str, lost: HostError | LockLost, redact: Redactor
) -> HostError:
    """A deploy whose host was lost at `step` after its backup: no automatic rollback (it could not
    reach the host, and another run may hold the lock by now); this run's marker owes the rollback
    to `recover` (or the next operation), and the message says what the host runs as far as known."""
    marker = runs.update(env, req.run_id, interrupted=True, rollback_owed=req.backup_id) or {}
    services = marker.get("services")
    before = req.previous_version or "no version"
    known = (f"{', '.join(services)} at {before} before this step" if services else f"its services at {before}") + {
        "migrate": f", its database perhaps migrated for {req.tag}",
        "up": f", its database migrated for {req.tag}, its services perhaps started at {req.tag}",
        "verify": f", {req.tag} up and its database migrated for it",
    }.get(step, "")
    what = lost.reason if isinstance(lost, HostError) else str(lost)
    # A HostError, whose message starts with the host: the reach closing its tunnels at the step's
    # end keeps it, where it would put its own "tunnel closed" in place of any other error.
    return HostError(
        SshHost.for_environment(env).where,
        redact(
            f"deploy of {req.tag} to {env.name} stopped at its {step} step: {what}; not rolled back (the host "
            f"or its Docker engine is out of reach): as far as known the host runs {known}; once it answers, "
            f"`ultra-ops recover --environment {env.name}` rolls it back to backup {req.backup_id} ({before}), "
            "as does the next operation"
        ),
    )


@contextmanager
def rollback_on_failure(
    env: Environment, req: DeployRequest, *, log: Log, redact: Redactor, step: str = "deploy"
) -> Iterator[None]:
    """Undo a half-done deploy: restore this deploy's backup, then re-raise with what happened,
    marked `with_outcome` for `failure_recorded`. An interrupt (Ctrl-C, SIGTERM) takes the same
    path: the environment is put back before the deploy stops. A lost host is not rolled back now
    (left_on_lost_host): `recover` does it once the host answers."""
    try:
        yield
    except BaseException as exc:
        # Interrupts arrive as BaseExceptions that are not Exceptions: KeyboardInterrupt, or the
        # orchestrator's own interrupt type (which the engine does not name). Other errors are bugs.
        interrupted = is_interrupt(exc)
        if req.backup_id is None or not (interrupted or isinstance(exc, UltraOpsError)):
            raise
        lost = host_lost(env, exc)
        if lost is not None:
            error = left_on_lost_host(env, req, step, lost, redact)
            log.warning(str(error))
            raise with_outcome(error, ReleaseStatus.FAILED) from None
        reason = "the deploy was interrupted" if interrupted else redact(str(exc))
        log.warning(f"deploy of {req.tag} failed ({reason}); rolling back to backup {req.backup_id}")
        try:
            with uninterrupted():  # a second Ctrl-C must not stop the rollback that puts it back
                result = rollback(env, req.backup_id, compose_file=req.compose_path, log=log, redact=redact)
        except UltraOpsError as rb_exc:
            raise with_outcome(
                OperationError(
                    f"{reason}; automatic rollback to backup {req.backup_id} ALSO failed: {redact(str(rb_exc))}"
                ),
                ReleaseStatus.ROLLBACK_FAILED,
            ) from None
        message = (
            f"{reason}; rolled back to backup {req.backup_id} ({result.version or 'no version'}), which verified ok"
        )
        # Keep the error's kind (VerificationFailed stays VerificationFailed) where it takes a message.
        try:
            error = OperationError(message) if interrupted else type(exc)(message)
        except TypeError:
            error = OperationError(message)
        raise with_outcome(error, ReleaseStatus.ROLLED_BACK) from None


def migrate(env: Environment, req: DeployRequest, *, log: Log, redact: Redactor) -> list[str]:
    with rollback_on_failure(env, req, log=log, redact=redact, step="migrate"):
        applied = apply_migrations(env, log=log, redact=redact)
    log.info(f"{len(applied)} migrations applied" + (": " + ", ".join(applied) if applied else ""))
    return applied


def up(env: Environment, req: DeployRequest, *, log: Log, redact: Redactor) -> None:
    with rollback_on_failure(env, req, log=log, redact=redact, step="up"):
        # Nothing to apply after the migrate step. But a run re-executed from this step after an
        # automatic rollback starts from a database the restore put back before the migrations.
        late = apply_migrations(env, log=log, redact=redact)
        if late:
            log.info(f"{len(late)} migrations applied again after a restore: {', '.join(late)}")
        # The env file is deployed state: it records the running version, and a restore brings it back.
        # With --registry the environment runs the image as pushed (registry/ultra-ai/backend:vX.Y.Z).
        mark_deployed(env, req.tag, registry_prefix(req.registry))
        runtime = get_runtime(env, compose_file=req.compose_path, registry=req.registry, log=log, redact=redact)
        runtime.up(req.tag)
        runtime.wait_healthy(env.health_timeout_s)
    log.info(f"{env.name} is up and healthy at {req.tag}")


def verify(
    env: Environment,
    req: DeployRequest,
    *,
    log: Log,
    redact: Redactor,
    notifications: NotificationSettings,
    on_report: Callable[[VerifyReport], None] | None = None,
    on_window: Callable[[WindowReport], None] | None = None,
) -> WindowReport:
    """Verify the release over its verification window (`notifications`: who is told when a person
    must decide); when it fails (or a person decides to roll
    back an inconclusive one) roll back to this deploy's backup and raise with the reason."""
    with rollback_on_failure(env, req, log=log, redact=redact, step="verify"):
        # Statement times are judged from here on: "since the deploy".
        save_baseline(env)
        return verify_window_or_fail(
            env,
            f"verification of {req.tag} on {env.name} failed",
            log=log,
            redact=redact,
            request_id=f"deploy-{req.run_id or req.tag}",
            version=req.tag,
            run_id=req.run_id,
            notifications=notifications,
            on_sample=on_report,
            on_window=on_window,
        )


def tag(env: Environment, req: DeployRequest, *, log: Log) -> str:
    return tag_release(env, req.tag, log=log)


def record(env: Environment, req: DeployRequest) -> ReleaseRecord:
    """The last step of a deploy that went through."""
    return record_release(env, deploy_record(env, req, ReleaseStatus.DEPLOYED))
