"""Ops of the release jobs: each holds the environment's lock where it changes the environment,
calls one engine step, and reports what it did as metadata."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from dagster import AssetKey, AssetObservation, MetadataValue, OpExecutionContext, op

from ultra_ops.defs.release.config import (
    ChecklistConfig,
    DecisionConfig,
    DeployConfig,
    ReleaseBranchConfig,
    RollbackConfig,
    VerifyConfig,
)
from ultra_ops.defs.release.health import record_health, record_window
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.resources import EnvironmentLocks, OpsSettings
from ultra_ops.defs.shared.runs import run_origin
from ultra_ops.defs.shared.steps import Step, environment_of, failures_as_dagster, load, partition_step, step
from ultra_ops.engine.calendar.gates import check_deploy, check_emergency, local_today
from ultra_ops.engine.deployed import deployed_version
from ultra_ops.engine.errors import VerificationFailed
from ultra_ops.engine.inputs import validate_tag
from ultra_ops.engine.release import deploy, rollback
from ultra_ops.engine.release.branches import create_release_branch as make_release_branch
from ultra_ops.engine.release.checklist import ChecklistReport, require_checklist, run_checklist
from ultra_ops.engine.release.deploy import DeployRequest
from ultra_ops.engine.release.records import ReleaseStatus
from ultra_ops.engine.release.rollback import RollbackPlan
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.verify.decisions import decide
from ultra_ops.engine.verify.runner import verify_or_fail
from ultra_ops.engine.verify.window import FAILED, verify_window


@contextmanager
def deploy_step(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> Iterator[Step]:
    """`step` for the deploy ops after the plan: under the lock, and a failure also leaves the
    deploy's release record."""
    with (
        step(context, req.environment, req.config_path, locks=locks, operation=f"deploy {req.tag}") as s,
        deploy.failure_recorded(s.env, req, redact=s.redact, log=s.log),
    ):
        yield s


@contextmanager
def rollback_step(
    context: OpExecutionContext,
    plan: RollbackPlan,
    locks: EnvironmentLocks,
    status: ReleaseStatus = ReleaseStatus.ROLLBACK_FAILED,
) -> Iterator[Step]:
    """`step` for the rollback ops: under the lock, and a failure also leaves the rollback's record."""
    with (
        step(context, plan.environment, plan.config_path, locks=locks, operation=f"rollback to {plan.backup_id}") as s,
        rollback.failure_recorded(s.env, plan, redact=s.redact, log=s.log, status=status),
    ):
        yield s


# deploy_job -------------------------------------------------------------------------------------


@op
def deploy_plan(
    context: OpExecutionContext, config: DeployConfig, settings: OpsSettings, locks: EnvironmentLocks
) -> DeployRequest:
    """Validate the launch form and take the environment's lock."""
    environment = environment_of(context)
    loaded = load(settings)
    with failures_as_dagster():
        launched_by, started_at = run_origin(context)
        emergency = check_emergency(config.emergency, config.reason)
        req = deploy.plan_deploy(
            loaded,
            environment,
            deploy.resolve_tag(loaded.environment(environment), config.tag),
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
    with step(context, req.environment, req.config_path, locks=locks, operation=f"deploy {req.tag}"):
        pass
    context.add_output_metadata(
        {"environment": req.environment, "tag": req.tag, "skip_tests": req.skip_tests, "skip_build": req.skip_build}
    )
    return req


def report_checklist(context: OpExecutionContext, s: Step, report: ChecklistReport) -> None:
    """The checklist's items with their evidence, as an observation of the environment's checklist."""
    context.log_event(
        AssetObservation(
            asset_key=AssetKey(["checklist", s.env.name]),
            metadata={
                "environment": s.env.name,
                "version": report.version or "",
                "ok": report.ok,
                "failed": len(report.failures),
                "items": len(report.items),
                "table": MetadataValue.md("```\n" + s.redact(report.table()) + "\n```"),
                "checklist": MetadataValue.json(s.redact.value(report.to_dict())),
            },
        )
    )
    s.log.info(report.summary())


@op
def deploy_checklist(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> DeployRequest:
    """The release document's pre-release checklist; blocks the deploy when an item fails."""
    with deploy_step(context, req, locks) as s:
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
def deploy_tests(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> DeployRequest:
    with deploy_step(context, req, locks) as s:
        outcome = deploy.run_tests(s.env, req, log=s.log, redact=s.redact)
    context.add_output_metadata({"tests": outcome})
    return req


@op
def deploy_backup(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> DeployRequest:
    with deploy_step(context, req, locks) as s:
        req = deploy.backup(s.env, req, log=s.log, redact=s.redact)
    context.add_output_metadata({"backup_id": req.backup_id or "", "previous_version": req.previous_version or ""})
    return req


@op
def deploy_build(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> DeployRequest:
    with deploy_step(context, req, locks) as s:
        context.add_output_metadata({"build": deploy.build(s.env, req, log=s.log, redact=s.redact)})
    return req


@op
def deploy_push(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> DeployRequest:
    with deploy_step(context, req, locks) as s:
        context.add_output_metadata({"push": deploy.push(s.env, req, log=s.log, redact=s.redact)})
    return req


@op
def deploy_migrate(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> DeployRequest:
    with deploy_step(context, req, locks) as s:
        applied = deploy.migrate(s.env, req, log=s.log, redact=s.redact)
    context.add_output_metadata({"applied": MetadataValue.json(applied)})
    return req


@op
def deploy_up(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> DeployRequest:
    """Start the release and wait until every service answers its health URL."""
    with deploy_step(context, req, locks) as s:
        deploy.up(s.env, req, log=s.log, redact=s.redact)
    return req


@op
def deploy_verify(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> DeployRequest:
    """Verify the release; on failure roll back to this deploy's backup and fail the run."""
    with deploy_step(context, req, locks) as s:
        deploy.verify(
            s.env,
            req,
            log=s.log,
            redact=s.redact,
            on_report=lambda report: record_health(context, s, report, "deploy"),
            on_window=lambda window: record_window(context, s, window),
        )
    return req


@op
def deploy_tag(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> DeployRequest:
    with deploy_step(context, req, locks) as s:
        context.add_output_metadata({"git_tag": deploy.tag(s.env, req, log=s.log)})
    return req


@op
def deploy_record(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> None:
    with step(context, req.environment, req.config_path, locks=locks, operation=f"deploy {req.tag}") as s:
        entry = deploy.record(s.env, req)
        s.log.info(f"{req.tag} deployed to {s.env.name} (backup {req.backup_id})")
    context.add_output_metadata({"release": MetadataValue.json(entry.to_dict())})


# verify_job -------------------------------------------------------------------------------------


@op
def verify_checks(context: OpExecutionContext, config: VerifyConfig, settings: OpsSettings) -> None:
    """Run every configured check (once, or over the verification window); fail the run when the
    verification fails. An inconclusive window is a warning here: there is no release to keep or roll
    back. Takes no lock: it only reads, and a verify during a deploy must not be refused or delay it."""
    with partition_step(context, settings) as s:
        version = deployed_version(s.env)
        if version:
            context.instance.add_run_tags(context.run_id, {tags.VERSION: version})
        if not config.window:
            verify_or_fail(
                s.env,
                f"verification of {s.env.name} failed",
                log=s.log,
                redact=s.redact,
                on_report=lambda report: record_health(context, s, report, "verify"),
            )
            return
        window = verify_window(
            s.env, redact=s.redact, log=s.log, on_sample=lambda report: record_health(context, s, report, "verify")
        )
        record_window(context, s, window)
        if window.outcome == FAILED:
            raise VerificationFailed(f"verification of {s.env.name} failed: {window.summary()}")


@op
def decide_verification(context: OpExecutionContext, config: DecisionConfig, settings: OpsSettings) -> None:
    """Approve or roll back a release whose verification window was inconclusive: the waiting deploy
    reads the decision and who made it. Takes no lock: the deploy waiting for it holds the lock."""
    loaded = load(settings)
    with failures_as_dagster():
        env = loaded.environment(config.environment.value)
        run = context.instance.get_run_by_id(context.run_id) or context.run
        record = decide(
            env,
            config.decision.value,
            by=config.by,
            reason=config.reason,
            request_id=config.request_id or None,
            launched_by=tags.launched_by(run.tags),
        )
    context.log.info(f"{record.id} on {env.name}: {record.decision} decided by {record.decided_by}")
    context.add_output_metadata({"decision": MetadataValue.json(record.to_dict())})


# rollback_job -----------------------------------------------------------------------------------


@op
def rollback_plan(
    context: OpExecutionContext, config: RollbackConfig, settings: OpsSettings, locks: EnvironmentLocks
) -> RollbackPlan:
    """Pick the backup, take the environment's lock, and check every checksum before anything stops."""
    with partition_step(context, settings, locks=locks, operation="rollback") as s:
        launched_by, started_at = run_origin(context)
        plan = rollback.plan_rollback(
            s.env,
            config.backup_id or None,
            config_path=str(s.env.config_file),
            run_id=context.run_id,
            launched_by=launched_by,
            started_at=started_at,
        )
        context.instance.add_run_tags(
            context.run_id, tags.launch_tags(s.env.name, "rollback", version=plan.version, backup_id=plan.backup_id)
        )
    with rollback_step(context, plan, locks, ReleaseStatus.FAILED) as s:
        plan = rollback.check_backup(s.env, plan, log=s.log)
    context.add_output_metadata({"backup": MetadataValue.json(plan.verified.to_dict() if plan.verified else {})})
    return plan


@op
def rollback_prepare(context: OpExecutionContext, plan: RollbackPlan, locks: EnvironmentLocks) -> RollbackPlan:
    """Safety backup and restore into a scratch database, while the current release still serves.
    Nothing is stopped or replaced yet: a failure here is recorded as `failed`."""
    with rollback_step(context, plan, locks, ReleaseStatus.FAILED) as s:
        plan = rollback.prepare_state(s.env, plan, log=s.log, redact=s.redact)
    context.add_output_metadata(
        {
            "safety_backup_id": plan.safety_backup_id or "",
            "scratch_database": plan.prepared.scratch if plan.prepared else "",
        }
    )
    return plan


@op
def rollback_stop(context: OpExecutionContext, plan: RollbackPlan, locks: EnvironmentLocks) -> RollbackPlan:
    with rollback_step(context, plan, locks) as s:
        rollback.stop_services(s.env, plan, log=s.log, redact=s.redact)
    return plan


@op
def rollback_swap(context: OpExecutionContext, plan: RollbackPlan, locks: EnvironmentLocks) -> RollbackPlan:
    """Swap the restored database in and restore the state files (services stopped)."""
    with rollback_step(context, plan, locks) as s:
        plan = rollback.swap_state(s.env, plan, log=s.log, redact=s.redact)
    context.add_output_metadata({"version": plan.version or "", "safety_backup_id": plan.safety_backup_id or ""})
    return plan


@op
def rollback_start(context: OpExecutionContext, plan: RollbackPlan, locks: EnvironmentLocks) -> RollbackPlan:
    with rollback_step(context, plan, locks) as s:
        rollback.start_services(s.env, plan, log=s.log, redact=s.redact)
    return plan


@op
def rollback_verify(context: OpExecutionContext, plan: RollbackPlan, locks: EnvironmentLocks) -> RollbackPlan:
    with rollback_step(context, plan, locks) as s:
        rollback.verify_rollback(
            s.env,
            plan,
            log=s.log,
            redact=s.redact,
            on_report=lambda report: record_health(context, s, report, "rollback"),
        )
    return plan


@op
def rollback_record(context: OpExecutionContext, plan: RollbackPlan, locks: EnvironmentLocks) -> None:
    with step(context, plan.environment, plan.config_path, locks=locks, operation=f"rollback to {plan.backup_id}") as s:
        entry = rollback.record_rollback(s.env, plan)
        s.log.info(f"{s.env.name} rolled back to backup {plan.backup_id} ({plan.version})")
    context.add_output_metadata({"release": MetadataValue.json(entry.to_dict())})


# stop_job ---------------------------------------------------------------------------------------


@op
def stop_services(context: OpExecutionContext, settings: OpsSettings, locks: EnvironmentLocks) -> None:
    """Stop the environment's services (docker-compose down), under its lock."""
    with partition_step(context, settings, locks=locks, operation="stop") as s:
        get_runtime(s.env, log=s.log, redact=s.redact).down()
        s.log.info(f"{s.env.name} stopped")


# release_branch_job, checklist_job --------------------------------------------------------------


@op
def create_release_branch(context: OpExecutionContext, config: ReleaseBranchConfig, settings: OpsSettings) -> None:
    """release/<tag> from main, with the version written into the release (package.json, env files)."""
    loaded = load(settings)
    launched_by, _ = run_origin(context)
    with failures_as_dagster():
        made = make_release_branch(loaded, config.tag, author=launched_by.replace(":", "-"), log=context.log)
    context.instance.add_run_tags(context.run_id, {tags.VERSION: made.version})
    context.add_output_metadata(
        {
            "branch": made.branch,
            "commit": made.commit,
            "base": made.base,
            "updated": MetadataValue.json(list(made.updated)),
            "pushed": made.pushed,
        }
    )


@op
def checklist_items(context: OpExecutionContext, config: ChecklistConfig, settings: OpsSettings) -> None:
    """Every item of the pre-release checklist with its evidence; the run fails when one fails. Takes
    no lock: it changes nothing (its rate limit burst only costs the checker's own address)."""
    with partition_step(context, settings) as s:
        version = config.tag or deployed_version(s.env)
        if config.tag:
            validate_tag(config.tag)
        if version:
            context.instance.add_run_tags(context.run_id, {tags.VERSION: version})
        report = run_checklist(s.env, version=version, redact=s.redact, log=s.log)
        report_checklist(context, s, report)
        require_checklist(report)
