"""Ops of the release jobs: each calls one engine step and reports what it did as metadata.

Errors from the engine become a dagster Failure whose text is already redacted, so no secret
reaches the run's event log, and its traceback stops at the op.
"""


from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from dagster import AssetKey, AssetObservation, Failure, MetadataValue, OpExecutionContext, op

from ultra_ops.defs.release.config import DeployConfig, RollbackConfig, VerifyConfig
from ultra_ops.defs.shared.resources import EnvironmentLocks, OpsSettings
from ultra_ops.engine.backups.restore import restore_backup
from ultra_ops.engine.backups.store import BackupInfo, verify_backup
from ultra_ops.engine.errors import UltraOpsError, VerificationFailed
from ultra_ops.engine.release import deploy
from ultra_ops.engine.release.checklist import require_checklist, run_checklist
from ultra_ops.engine.release.records import ReleaseRecord, record_release
from ultra_ops.engine.release.rollback import choose_backup, deployed_version, restart
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.secrets import RedactingLog, Redactor
from ultra_ops.engine.settings import Environment, load_settings
from ultra_ops.engine.verify.report import VerifyReport
from ultra_ops.engine.verify.runner import verify_environment


@dataclass(frozen=True)
class Step:
    env: Environment
    log: RedactingLog
    redact: Redactor


@contextmanager
def failures_as_dagster(redact: Redactor | None = None) -> Iterator[None]:
    try:
        yield
    except UltraOpsError as exc:
        text = redact(str(exc)) if redact else str(exc)
        raise Failure(description=text, metadata={"error": type(exc).__name__},
                      allow_retries=False) from None


@contextmanager
def step(context: OpExecutionContext, environment: str, config_path: str) -> Iterator[Step]:
    """Load the environment, wrap the log in redaction, turn engine errors into Failures."""
    with failures_as_dagster():
        env = load_settings(config_path).environment(environment)
    redact = Redactor.for_environment(env)
    with failures_as_dagster(redact):
        yield Step(env, RedactingLog(context.log, redact), redact)


@contextmanager
def launched_step(context: OpExecutionContext, settings: OpsSettings, environment: str,
                  operation: str) -> Iterator[Step]:
    """`step` for a one-op job: tag the run (UI launches carry no tags) and load the config it names."""
    context.instance.add_run_tags(context.run_id, {"ultra_ops/environment": environment,
                                                   "ultra_ops/operation": operation})
    with failures_as_dagster():
        config_path = str(settings.load().path)
    with step(context, environment, config_path) as s:
        yield s


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


# deploy_job -------------------------------------------------------------------------------------

@op
def deploy_plan(
    context: OpExecutionContext, config: DeployConfig, settings: OpsSettings, locks: EnvironmentLocks
) -> deploy.DeployRequest:
    """Validate the launch form and take the environment's lock for the rest of the run."""
    with failures_as_dagster():
        loaded = settings.load()
        req = deploy.plan_deploy(loaded, config.environment.value, config.tag, skip_tests=config.skip_tests,
                                 skip_build=config.skip_build, compose_file=config.compose_file,
                                 registry=config.registry, run_id=context.run_id)
        context.instance.add_run_tags(context.run_id, req.run_tags())
        locks.acquire(loaded.environment(req.environment), operation=f"deploy {req.tag}", run_id=context.run_id)
    context.add_output_metadata({"environment": req.environment, "tag": req.tag,
                                 "skip_tests": req.skip_tests, "skip_build": req.skip_build})
    return req


@op
def deploy_checklist(context: OpExecutionContext, req: deploy.DeployRequest) -> deploy.DeployRequest:
    """The release document's pre-release checklist; blocks the deploy when an item fails."""
    with step(context, req.environment, req.config_path) as s:
        items = run_checklist(s.env, redact=s.redact)
        context.add_output_metadata({"items": MetadataValue.json([i.to_dict() for i in items])})
        for item in items:
            (s.log.info if item.ok else s.log.warning)(f"[{'x' if item.ok else ' '}] {item.name}: {item.detail}")
        require_checklist(items)
    return req


@op
def deploy_tests(context: OpExecutionContext, req: deploy.DeployRequest) -> deploy.DeployRequest:
    with step(context, req.environment, req.config_path) as s:
        outcome = deploy.run_tests(s.env, req, log=s.log, redact=s.redact)
    context.add_output_metadata({"tests": outcome})
    return req


@op
def deploy_backup(context: OpExecutionContext, req: deploy.DeployRequest) -> deploy.DeployRequest:
    with step(context, req.environment, req.config_path) as s:
        req = deploy.backup(s.env, req, log=s.log, redact=s.redact)
    context.add_output_metadata({"backup_id": req.backup_id or "", "previous_version": req.previous_version or ""})
    return req


@op
def deploy_build(context: OpExecutionContext, req: deploy.DeployRequest) -> deploy.DeployRequest:
    with step(context, req.environment, req.config_path) as s:
        context.add_output_metadata({"build": deploy.build(s.env, req, log=s.log, redact=s.redact)})
    return req


@op
def deploy_push(context: OpExecutionContext, req: deploy.DeployRequest) -> deploy.DeployRequest:
    with step(context, req.environment, req.config_path) as s:
        context.add_output_metadata({"push": deploy.push(s.env, req, log=s.log, redact=s.redact)})
    return req


@op
def deploy_migrate(context: OpExecutionContext, req: deploy.DeployRequest) -> deploy.DeployRequest:
    with step(context, req.environment, req.config_path) as s:
        applied = deploy.migrate(s.env, req, log=s.log, redact=s.redact)
    context.add_output_metadata({"applied": MetadataValue.json(applied)})
    return req


@op
def deploy_up(context: OpExecutionContext, req: deploy.DeployRequest) -> deploy.DeployRequest:
    """Start the release and wait until every service answers its health URL."""
    with step(context, req.environment, req.config_path) as s:
        deploy.up(s.env, req, log=s.log, redact=s.redact)
    return req


@op
def deploy_verify(context: OpExecutionContext, req: deploy.DeployRequest) -> deploy.DeployRequest:
    """Verify the release; on failure roll back to this deploy's backup and fail the run."""
    with step(context, req.environment, req.config_path) as s:
        deploy.verify(s.env, req, log=s.log, redact=s.redact,
                      on_report=lambda report: report_verification(context, s, report))
    return req


@op
def deploy_tag(context: OpExecutionContext, req: deploy.DeployRequest) -> deploy.DeployRequest:
    with step(context, req.environment, req.config_path) as s:
        context.add_output_metadata({"git_tag": deploy.tag(s.env, req, log=s.log)})
    return req


@op
def deploy_record(context: OpExecutionContext, req: deploy.DeployRequest) -> None:
    with step(context, req.environment, req.config_path) as s:
        entry = deploy.record(s.env, req)
        s.log.info(f"{req.tag} deployed to {s.env.name} (backup {req.backup_id})")
    context.add_output_metadata({"release": MetadataValue.json(entry.to_dict())})


# verify_job -------------------------------------------------------------------------------------

@op
def verify_checks(context: OpExecutionContext, config: VerifyConfig, settings: OpsSettings) -> None:
    """Run every configured check at once; fail the run when any check fails."""
    with launched_step(context, settings, config.environment.value, "verify") as s:
        version = deployed_version(s.env)
        if version:
            context.instance.add_run_tags(context.run_id, {"ultra_ops/version": version})
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
    environment = config.environment.value
    with failures_as_dagster():
        loaded = settings.load()
        env = loaded.environment(environment)
        info = choose_backup(env, config.backup_id)
        tags = {"ultra_ops/environment": env.name, "ultra_ops/operation": "rollback",
                "ultra_ops/backup_id": info.id}
        if info.version:
            tags["ultra_ops/version"] = info.version
        context.instance.add_run_tags(context.run_id, tags)
        locks.acquire(env, operation=f"rollback to {info.id}", run_id=context.run_id)
        verified = verify_backup(env, info.id)
    context.add_output_metadata({"backup": MetadataValue.json(info.to_dict())})
    return RollbackRequest(env.name, str(loaded.path), info.id, info.version, deployed_version(env),
                           verified=verified)


@op
def rollback_stop(context: OpExecutionContext, req: RollbackRequest) -> RollbackRequest:
    with step(context, req.environment, req.config_path) as s:
        get_runtime(s.env, log=s.log, redact=s.redact).down()
    return req


@op
def rollback_restore(context: OpExecutionContext, req: RollbackRequest) -> RollbackRequest:
    """Restore the database and state files (after a safety backup of the current state)."""
    with step(context, req.environment, req.config_path) as s:
        result = restore_backup(s.env, req.backup_id, log=s.log, redact=s.redact, verified=req.verified)
    context.add_output_metadata({"restore": MetadataValue.json(result)})
    # The env file just restored says which version ran when the backup was taken.
    return replace(req, version=deployed_version(s.env) or req.version,
                   safety_backup_id=result.get("safety_backup_id"))


@op
def rollback_start(context: OpExecutionContext, req: RollbackRequest) -> RollbackRequest:
    with step(context, req.environment, req.config_path) as s:
        restart(s.env, req.version, log=s.log, redact=s.redact)
    return req


@op
def rollback_verify(context: OpExecutionContext, req: RollbackRequest) -> RollbackRequest:
    with step(context, req.environment, req.config_path) as s:
        report = verify_environment(s.env, redact=s.redact, log=s.log)
        report_verification(context, s, report)
        if not report.ok:
            record_release(s.env, ReleaseRecord(s.env.name, req.version, "rollback_failed", context.run_id,
                                                req.backup_id, req.previous_version, report.summary()))
            raise VerificationFailed(f"rolled back {s.env.name} to backup {req.backup_id} "
                                     f"but verification failed: {report.summary()}")
    return req


@op
def rollback_record(context: OpExecutionContext, req: RollbackRequest) -> None:
    with step(context, req.environment, req.config_path) as s:
        entry = ReleaseRecord(s.env.name, req.version, "rolled_back", context.run_id, req.backup_id,
                              req.previous_version, f"safety backup {req.safety_backup_id}")
        record_release(s.env, entry)
        s.log.info(f"{s.env.name} rolled back to backup {req.backup_id} ({req.version})")
    context.add_output_metadata({"release": MetadataValue.json(entry.to_dict())})
