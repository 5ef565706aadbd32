"""Ops of the release jobs that are one op each: verify, decide a verification, stop, make a
release branch. The deploy and rollback ops are in deploy_ops.py and rollback_ops.py."""

from dagster import MetadataValue, OpExecutionContext, op

from ultra_ops.defs.calendar.pending import log_pending
from ultra_ops.defs.release.config import DecisionConfig, ReleaseBranchConfig, VerifyConfig
from ultra_ops.defs.release.health import record_health, record_window
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.resources import EnvironmentLocks, OpsSettings
from ultra_ops.defs.shared.runs import run_origin
from ultra_ops.defs.shared.steps import failures_as_dagster, load, partition_step
from ultra_ops.engine.deployed import deployed_version
from ultra_ops.engine.errors import VerificationFailed
from ultra_ops.engine.release.branches import create_release_branch as make_release_branch
from ultra_ops.engine.runtimes import get_runtime
from ultra_ops.engine.verify.decisions import decide
from ultra_ops.engine.verify.runner import verify_or_fail
from ultra_ops.engine.verify.window import FAILED, verify_window

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
    log_pending(context, loaded, context.log)
    context.add_output_metadata({"decision": MetadataValue.json(record.to_dict())})


# stop_job ---------------------------------------------------------------------------------------


@op
def stop_services(context: OpExecutionContext, settings: OpsSettings, locks: EnvironmentLocks) -> None:
    """Stop the environment's services (docker-compose down), under its lock."""
    with partition_step(context, settings, locks=locks, operation="stop") as s:
        get_runtime(s.env, log=s.log, redact=s.redact).down()
        s.log.info(f"{s.env.name} stopped")


# release_branch_job -------------------------------------------------------------------------------


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
