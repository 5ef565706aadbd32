"""Ops of deploy_job: the plan takes the environment's lock, then each step calls one engine step
under it and reports what it did as metadata; a failed step leaves the deploy's release record."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from dagster import MetadataValue, OpExecutionContext, op

from ultra_ops.defs.release.checklist import report_checklist
from ultra_ops.defs.release.config import DeployConfig
from ultra_ops.defs.release.health import record_health, record_window
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.resources import EnvironmentLocks, OpsSettings
from ultra_ops.defs.shared.runs import run_origin
from ultra_ops.defs.shared.steps import Step, environment_of, failures_as_dagster, load, step
from ultra_ops.engine import runs
from ultra_ops.engine.calendar.gates import check_deploy, deploy_reasons, local_today
from ultra_ops.engine.calendar.offer import offered_version
from ultra_ops.engine.deployed import deployed_version
from ultra_ops.engine.errors import InputError
from ultra_ops.engine.release import deploy
from ultra_ops.engine.release.checklist import require_checklist, run_checklist
from ultra_ops.engine.release.deploy import DeployRequest
from ultra_ops.engine.release.downgrade import check_downgrade, version_change
from ultra_ops.engine.release.records import ReleaseStatus
from ultra_ops.engine.settings import Settings


@contextmanager
def deploy_step(
    context: OpExecutionContext, req: DeployRequest, settings: OpsSettings, locks: EnvironmentLocks
) -> Iterator[Step]:
    """`step` for the deploy ops after the plan: under the lock, and a failure also leaves the
    deploy's release record."""
    with (
        step(context, load(settings), req.environment, locks=locks, operation=f"deploy {req.tag}") as s,
        deploy.failure_recorded(s.env, req, redact=s.redact, log=s.log),
    ):
        yield s


@op
def deploy_plan(
    context: OpExecutionContext, config: DeployConfig, settings: OpsSettings, locks: EnvironmentLocks
) -> DeployRequest:
    """Validate the launch form, take the environment's lock, and refuse a downgrade: shows and
    records what the deploy changes, current → target."""
    environment = environment_of(context)
    loaded = load(settings)
    with failures_as_dagster():
        launched_by, started_at = run_origin(context)
        emergency, downgrade = deploy_reasons(config.emergency, config.allow_downgrade, config.reason)
        req = deploy.plan_deploy(
            loaded,
            environment,
            _tag(loaded, environment, config.tag),
            skip_tests=config.skip_tests,
            skip_build=config.skip_build,
            compose_file=config.compose_file,
            registry=config.registry,
            run_id=context.run_id,
            launched_by=launched_by,
            started_at=started_at,
            emergency_reason=emergency,
        )
        # The same gates for the UI, the CLI and the schedules: they are checked here, in the run.
        check_deploy(loaded, environment, req.tag, local_today(loaded), emergency_reason=emergency)
    # A UI launch knows its version only now; the CLI and schedules put it on the run at submission.
    context.instance.add_run_tags(
        context.run_id,
        tags.launch_tags(
            req.environment,
            "deploy",
            version=req.tag,
            flags={tags.SKIP_TESTS: req.skip_tests, tags.SKIP_BUILD: req.skip_build, tags.EMERGENCY: bool(emergency)},
        ),
    )
    # The lock's marker holds the record this deploy leaves if it dies before its next step.
    with step(
        context,
        loaded,
        req.environment,
        locks=locks,
        operation=f"deploy {req.tag}",
        draft=lambda env: deploy.deploy_record(env, req, ReleaseStatus.INTERRUPTED).to_dict(),
    ) as s:
        # Under the lock: the version read here is the one the deploy replaces.
        current = deployed_version(s.env)
        s.log.info(f"{s.env.name}: {version_change(current, req.tag)}")
        try:
            allowed = check_downgrade(s.env.name, current, req.tag, allowed=downgrade)
        except InputError:
            # Refused before anything changed: bad input leaves no release record, so no draft either.
            runs.update(s.env, context.run_id, record=None)
            raise
        req = replace(req, downgrade=allowed)
        if req.downgrade:
            s.log.warning(f"{s.env.name}: allowed {req.downgrade}")
            context.instance.add_run_tags(context.run_id, {tags.DOWNGRADE: "true"})
    context.add_output_metadata(
        {
            "environment": req.environment,
            "tag": req.tag,
            "current": current or "",
            "change": version_change(current, req.tag),
            "downgrade": req.downgrade or "",
            "skip_tests": req.skip_tests,
            "skip_build": req.skip_build,
        }
    )
    return req


def _tag(settings: Settings, environment: str, tag: str | None) -> str:
    """The form's tag, checked; an empty one outside development says why the form offered none."""
    try:
        return deploy.resolve_tag(settings.environment(environment), tag)
    except InputError as exc:
        if tag:
            raise
        _offered, why = offered_version(settings, environment)
        raise InputError(f"{exc}; the launchpad offers none: {why}") from None


@op
def deploy_checklist(
    context: OpExecutionContext, req: DeployRequest, settings: OpsSettings, locks: EnvironmentLocks
) -> DeployRequest:
    """The release document's pre-release checklist; blocks the deploy when an item fails."""
    with deploy_step(context, req, settings, locks) as s:
        report = run_checklist(
            s.env, version=req.tag, redact=s.redact, skip_tests=req.skip_tests, in_deploy=True, log=s.log
        )
        report_checklist(context, s, report)
        require_checklist(report)
        tests = next((i for i in report.items if i.name == "automated tests pass"), None)
        req = replace(req, tests_passed=tests is not None and tests.status == "pass")
    context.add_output_metadata(
        {
            "passed": sum(1 for i in report.items if i.status == "pass"),
            "warned": sum(1 for i in report.items if i.status == "warn"),
        }
    )
    return req


@op
def deploy_tests(
    context: OpExecutionContext, req: DeployRequest, settings: OpsSettings, locks: EnvironmentLocks
) -> DeployRequest:
    with deploy_step(context, req, settings, locks) as s:
        outcome = deploy.run_tests(s.env, req, log=s.log, redact=s.redact)
    context.add_output_metadata({"tests": outcome})
    return req


@op
def deploy_backup(
    context: OpExecutionContext, req: DeployRequest, settings: OpsSettings, locks: EnvironmentLocks
) -> DeployRequest:
    with deploy_step(context, req, settings, locks) as s:
        req = deploy.backup(s.env, req, log=s.log, redact=s.redact)
    context.add_output_metadata({"backup_id": req.backup_id or "", "previous_version": req.previous_version or ""})
    return req


@op
def deploy_build(
    context: OpExecutionContext, req: DeployRequest, settings: OpsSettings, locks: EnvironmentLocks
) -> DeployRequest:
    with deploy_step(context, req, settings, locks) as s:
        context.add_output_metadata({"build": deploy.build(s.env, req, log=s.log, redact=s.redact)})
    return req


@op
def deploy_push(
    context: OpExecutionContext, req: DeployRequest, settings: OpsSettings, locks: EnvironmentLocks
) -> DeployRequest:
    with deploy_step(context, req, settings, locks) as s:
        context.add_output_metadata({"push": deploy.push(s.env, req, log=s.log, redact=s.redact)})
    return req


@op
def deploy_migrate(
    context: OpExecutionContext, req: DeployRequest, settings: OpsSettings, locks: EnvironmentLocks
) -> DeployRequest:
    with deploy_step(context, req, settings, locks) as s:
        applied = deploy.migrate(s.env, req, log=s.log, redact=s.redact)
    context.add_output_metadata({"applied": MetadataValue.json(applied)})
    return req


@op
def deploy_up(
    context: OpExecutionContext, req: DeployRequest, settings: OpsSettings, locks: EnvironmentLocks
) -> DeployRequest:
    """Start the release and wait until every service answers its health URL."""
    with deploy_step(context, req, settings, locks) as s:
        deploy.up(s.env, req, log=s.log, redact=s.redact)
    return req


@op
def deploy_verify(
    context: OpExecutionContext, req: DeployRequest, settings: OpsSettings, locks: EnvironmentLocks
) -> DeployRequest:
    """Verify the release; on failure roll back to this deploy's backup and fail the run."""
    with deploy_step(context, req, settings, locks) as s:
        deploy.verify(
            s.env,
            req,
            log=s.log,
            redact=s.redact,
            notifications=load(settings).notifications,
            on_report=lambda report: record_health(context, s, report, "deploy"),
            on_window=lambda window: record_window(context, s, window),
        )
    return req


@op
def deploy_tag(
    context: OpExecutionContext, req: DeployRequest, settings: OpsSettings, locks: EnvironmentLocks
) -> DeployRequest:
    with deploy_step(context, req, settings, locks) as s:
        context.add_output_metadata({"git_tag": deploy.tag(s.env, req, log=s.log)})
    return req


@op
def deploy_record(
    context: OpExecutionContext, req: DeployRequest, settings: OpsSettings, locks: EnvironmentLocks
) -> None:
    with step(context, load(settings), req.environment, locks=locks, operation=f"deploy {req.tag}") as s:
        entry = deploy.record(s.env, req)
        s.log.info(f"{req.tag} deployed to {s.env.name} (backup {req.backup_id})")
    context.add_output_metadata({"release": MetadataValue.json(entry.to_dict())})
