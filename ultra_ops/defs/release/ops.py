"""Ops of the release jobs: each holds the environment's lock where it changes the environment,
calls one engine step and reports what it did as metadata."""


from dataclasses import dataclass, replace

from dagster import AssetKey, AssetObservation, MetadataValue, OpExecutionContext, op

from ultra_ops.defs.release.config import DeployConfig, RollbackConfig
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.resources import EnvironmentLocks, OpsSettings
from ultra_ops.defs.shared.steps import Step, environment_of, failures_as_dagster, load, step
from ultra_ops.engine.backups.backup import BackupInfo, verify_backup
from ultra_ops.engine.backups.restore import restore_backup
from ultra_ops.engine.errors import VerificationFailed
from ultra_ops.engine.release import deploy
from ultra_ops.engine.release.checklist import require_checklist, run_checklist
from ultra_ops.engine.release.deploy import DeployRequest
from ultra_ops.engine.release.records import ReleaseRecord, record_release
from ultra_ops.engine.release.rollback import choose_backup, deployed_version, restart
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.verify.runner import VerifyReport, verify_environment


def report_verification(context: OpExecutionContext, s: Step, report: VerifyReport) -> None:
    """Verification results as run metadata and as an observation of the environment's health."""
    data = s.redact.value(report.to_dict())
    metadata = {
        "environment": s.env.name,
        "healthy": report.ok,
        "checks": len(report.results),
        "failed": len(report.failures),
        "duration_ms": round(report.duration_ms, 1),
        "results": MetadataValue.md("```\n" + s.redact(report.table()) + "\n```"),
        "report": MetadataValue.json(data),
    }
    context.log_event(AssetObservation(asset_key=AssetKey(["health", s.env.name]), metadata=metadata))
    s.log.info(report.summary())


def _deploy_step(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks):  # noqa: ANN202
    return step(context, req.environment, req.config_path, locks=locks, operation=f"deploy {req.tag}")


# deploy_job -------------------------------------------------------------------------------------

@op
def deploy_plan(
    context: OpExecutionContext, config: DeployConfig, settings: OpsSettings, locks: EnvironmentLocks
) -> DeployRequest:
    """Validate the launch form and take the environment's lock."""
    environment = environment_of(context)
    loaded = load(settings)
    with failures_as_dagster():
        tag = deploy.resolve_tag(loaded.environment(environment), config.tag)
        req = deploy.plan_deploy(loaded, environment, tag, skip_tests=config.skip_tests,
                                 skip_build=config.skip_build, compose_file=config.compose_file,
                                 registry=config.registry, run_id=context.run_id)
    # A UI launch knows its version only now; the CLI and schedules put it on the run at submission.
    context.instance.add_run_tags(context.run_id, tags.launch_tags(
        req.environment, "deploy", version=req.tag,
        flags={tags.SKIP_TESTS: req.skip_tests, tags.SKIP_BUILD: req.skip_build}))
    with step(context, req.environment, req.config_path, locks=locks, operation=f"deploy {req.tag}"):
        pass
    context.add_output_metadata({"environment": req.environment, "tag": req.tag,
                                 "skip_tests": req.skip_tests, "skip_build": req.skip_build})
    return req


@op
def deploy_checklist(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> DeployRequest:
    """The release document's pre-release checklist; blocks the deploy when an item fails."""
    with _deploy_step(context, req, locks) as s:
        items = run_checklist(s.env, redact=s.redact)
        context.add_output_metadata({"items": MetadataValue.json([i.to_dict() for i in items])})
        for item in items:
            (s.log.info if item.ok else s.log.warning)(f"[{'x' if item.ok else ' '}] {item.name}: {item.detail}")
        require_checklist(items)
    return req


@op
def deploy_tests(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> DeployRequest:
    with _deploy_step(context, req, locks) as s:
        outcome = deploy.run_tests(s.env, req, log=s.log, redact=s.redact)
    context.add_output_metadata({"tests": outcome})
    return req


@op
def deploy_backup(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> DeployRequest:
    with _deploy_step(context, req, locks) as s:
        req = deploy.backup(s.env, req, log=s.log, redact=s.redact)
    context.add_output_metadata({"backup_id": req.backup_id or "", "previous_version": req.previous_version or ""})
    return req


@op
def deploy_build(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> DeployRequest:
    with _deploy_step(context, req, locks) as s:
        context.add_output_metadata({"build": deploy.build(s.env, req, log=s.log, redact=s.redact)})
    return req


@op
def deploy_push(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> DeployRequest:
    with _deploy_step(context, req, locks) as s:
        context.add_output_metadata({"push": deploy.push(s.env, req, log=s.log, redact=s.redact)})
    return req


@op
def deploy_migrate(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> DeployRequest:
    with _deploy_step(context, req, locks) as s:
        applied = deploy.migrate(s.env, req, log=s.log, redact=s.redact)
    context.add_output_metadata({"applied": MetadataValue.json(applied)})
    return req


@op
def deploy_up(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> DeployRequest:
    """Start the release and wait until every service answers its health URL."""
    with _deploy_step(context, req, locks) as s:
        deploy.up(s.env, req, log=s.log, redact=s.redact)
    return req


@op
def deploy_verify(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> DeployRequest:
    """Verify the release; on failure roll back to this deploy's backup and fail the run."""
    with _deploy_step(context, req, locks) as s:
        deploy.verify(s.env, req, log=s.log, redact=s.redact,
                      on_report=lambda report: report_verification(context, s, report))
    return req


@op
def deploy_tag(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> DeployRequest:
    with _deploy_step(context, req, locks) as s:
        context.add_output_metadata({"git_tag": deploy.tag(s.env, req, log=s.log)})
    return req


@op
def deploy_record(context: OpExecutionContext, req: DeployRequest, locks: EnvironmentLocks) -> None:
    with _deploy_step(context, req, locks) as s:
        entry = deploy.record(s.env, req)
        s.log.info(f"{req.tag} deployed to {s.env.name} (backup {req.backup_id})")
    context.add_output_metadata({"release": MetadataValue.json(entry.to_dict())})


# verify_job -------------------------------------------------------------------------------------

@op
def verify_checks(context: OpExecutionContext, settings: OpsSettings) -> None:
    """Run every configured check at once; fail the run when any check fails. Takes no lock: it
    only reads, and a verify during a deploy must not be refused or delay it."""
    loaded = load(settings)
    with step(context, environment_of(context), str(loaded.path)) as s:
        version = deployed_version(s.env)
        if version:
            context.instance.add_run_tags(context.run_id, {tags.VERSION: version})
        report = verify_environment(s.env, redact=s.redact, log=s.log)
        report_verification(context, s, report)
        if not report.ok:
            raise VerificationFailed(f"verification of {s.env.name} failed: {report.summary()}")


# rollback_job -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RollbackRequest:
    environment: str
    config_path: str
    backup_id: str
    version: str | None = None
    previous_version: str | None = None
    safety_backup_id: str | None = None
    verified: BackupInfo | None = None  # checked by rollback_plan before anything was stopped


@op
def rollback_plan(
    context: OpExecutionContext, config: RollbackConfig, settings: OpsSettings, locks: EnvironmentLocks
) -> RollbackRequest:
    """Pick the backup, check every checksum, and take the environment's lock."""
    loaded = load(settings)
    with step(context, environment_of(context), str(loaded.path), locks=locks, operation="rollback") as s:
        env = s.env
        info = choose_backup(env, config.backup_id or None)
        context.instance.add_run_tags(context.run_id, tags.launch_tags(
            env.name, "rollback", version=info.version, backup_id=info.id))
        verified = verify_backup(env, info.id)
    context.add_output_metadata({"backup": MetadataValue.json(info.to_dict())})
    return RollbackRequest(env.name, str(loaded.path), info.id, info.version, deployed_version(env),
                           verified=verified)


def _rollback_step(context: OpExecutionContext, req: RollbackRequest, locks: EnvironmentLocks):  # noqa: ANN202
    return step(context, req.environment, req.config_path, locks=locks, operation=f"rollback to {req.backup_id}")


@op
def rollback_stop(context: OpExecutionContext, req: RollbackRequest, locks: EnvironmentLocks) -> RollbackRequest:
    with _rollback_step(context, req, locks) as s:
        get_runtime(s.env, log=s.log, redact=s.redact).down()
    return req


@op
def rollback_restore(context: OpExecutionContext, req: RollbackRequest, locks: EnvironmentLocks) -> RollbackRequest:
    """Restore the database and state files (after a safety backup of the current state)."""
    with _rollback_step(context, req, locks) as s:
        result = restore_backup(s.env, req.backup_id, log=s.log, redact=s.redact, verified=req.verified)
    context.add_output_metadata({"restore": MetadataValue.json(result)})
    # The env file just restored says which version ran when the backup was taken.
    return replace(req, version=deployed_version(s.env) or req.version,
                   safety_backup_id=result.get("safety_backup_id"))


@op
def rollback_start(context: OpExecutionContext, req: RollbackRequest, locks: EnvironmentLocks) -> RollbackRequest:
    with _rollback_step(context, req, locks) as s:
        restart(s.env, req.version, log=s.log, redact=s.redact)
    return req


@op
def rollback_verify(context: OpExecutionContext, req: RollbackRequest, locks: EnvironmentLocks) -> RollbackRequest:
    with _rollback_step(context, req, locks) as s:
        report = verify_environment(s.env, redact=s.redact, log=s.log)
        report_verification(context, s, report)
        if not report.ok:
            record_release(s.env, ReleaseRecord(s.env.name, req.version, "rollback_failed", context.run_id,
                                                req.backup_id, req.previous_version, report.summary()))
            raise VerificationFailed(f"rolled back {s.env.name} to backup {req.backup_id} "
                                     f"but verification failed: {report.summary()}")
    return req


@op
def rollback_record(context: OpExecutionContext, req: RollbackRequest, locks: EnvironmentLocks) -> None:
    with _rollback_step(context, req, locks) as s:
        entry = ReleaseRecord(s.env.name, req.version, "rolled_back", context.run_id, req.backup_id,
                              req.previous_version, f"safety backup {req.safety_backup_id}")
        record_release(s.env, entry)
        s.log.info(f"{s.env.name} rolled back to backup {req.backup_id} ({req.version})")
    context.add_output_metadata({"release": MetadataValue.json(entry.to_dict())})


# stop_job ---------------------------------------------------------------------------------------

@op
def stop_services(context: OpExecutionContext, settings: OpsSettings, locks: EnvironmentLocks) -> None:
    """Stop the environment's services (docker-compose down), under its lock."""
    loaded = load(settings)
    with step(context, environment_of(context), str(loaded.path), locks=locks, operation="stop") as s:
        get_runtime(s.env, log=s.log, redact=s.redact).down()
        s.log.info(f"{s.env.name} stopped")
