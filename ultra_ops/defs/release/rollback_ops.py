"""Ops of rollback_job: the plan takes the environment's lock and checks the backup, then each step
calls one engine step under it; a failed step leaves the rollback's release record."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster import MetadataValue, OpExecutionContext, op

from ultra_ops.defs.release.config import RollbackConfig
from ultra_ops.defs.release.health import record_health
from ultra_ops.defs.shared import tags
from ultra_ops.defs.shared.resources import EnvironmentLocks, OpsSettings
from ultra_ops.defs.shared.runs import run_origin
from ultra_ops.defs.shared.steps import Step, load, partition_step, step
from ultra_ops.engine.release import rollback
from ultra_ops.engine.release.records import ReleaseStatus
from ultra_ops.engine.release.rollback import RollbackPlan
from ultra_ops.engine.settings import Environment


@contextmanager
def rollback_step(
    context: OpExecutionContext,
    plan: RollbackPlan,
    settings: OpsSettings,
    locks: EnvironmentLocks,
    status: ReleaseStatus = ReleaseStatus.ROLLBACK_FAILED,
) -> Iterator[Step]:
    """`step` for the rollback ops: under the lock, and a failure also leaves the rollback's record."""
    with (
        step(context, load(settings), plan.environment, locks=locks, operation=f"rollback to {plan.backup_id}") as s,
        rollback.failure_recorded(s.env, plan, redact=s.redact, log=s.log, status=status),
    ):
        yield s


@op
def rollback_plan(
    context: OpExecutionContext, config: RollbackConfig, settings: OpsSettings, locks: EnvironmentLocks
) -> RollbackPlan:
    """Take the environment's lock, pick the backup, and check every checksum before anything stops."""
    launched_by, started_at = run_origin(context)
    planned: list[RollbackPlan] = []

    def draft(env: Environment) -> dict[str, Any]:
        # Under the lock, after its recovery: the backup is chosen from the list as it is now, and
        # the record this rollback leaves if it dies goes into the lock's marker at once.
        planned.append(
            rollback.plan_rollback(
                env, config.backup_id or None, run_id=context.run_id, launched_by=launched_by, started_at=started_at
            )
        )
        return rollback.rollback_record(env, planned[-1], ReleaseStatus.INTERRUPTED).to_dict()

    with partition_step(context, settings, locks=locks, operation="rollback", draft=draft) as s:
        if not planned:  # the run held the lock already (a re-execution): the next step notes the draft
            draft(s.env)
        plan = planned[-1]
        context.instance.add_run_tags(
            context.run_id, tags.launch_tags(s.env.name, "rollback", version=plan.version, backup_id=plan.backup_id)
        )
    with rollback_step(context, plan, settings, locks, ReleaseStatus.FAILED) as s:
        plan = rollback.check_backup(s.env, plan, log=s.log)
    context.add_output_metadata({"backup": MetadataValue.json(plan.verified.to_dict() if plan.verified else {})})
    return plan


@op
def rollback_prepare(
    context: OpExecutionContext, plan: RollbackPlan, settings: OpsSettings, locks: EnvironmentLocks
) -> RollbackPlan:
    """Safety backup and restore into a scratch database, while the current release still serves.
    Nothing is stopped or replaced yet: a failure here is recorded as `failed`."""
    with rollback_step(context, plan, settings, locks, ReleaseStatus.FAILED) as s:
        plan = rollback.prepare_state(s.env, plan, log=s.log, redact=s.redact)
    context.add_output_metadata(
        {
            "safety_backup_id": plan.safety_backup_id or "",
            "scratch_database": plan.prepared.scratch if plan.prepared else "",
        }
    )
    return plan


@op
def rollback_restart(
    context: OpExecutionContext, plan: RollbackPlan, settings: OpsSettings, locks: EnvironmentLocks
) -> RollbackPlan:
    """Stop, swap the restored database in and start the restored release, in one step: no step
    boundary inside the downtime (under compose its containers are made before the stop)."""
    with rollback_step(context, plan, settings, locks) as s:
        plan = rollback.stop_swap_start(s.env, plan, log=s.log, redact=s.redact)
    context.add_output_metadata({"version": plan.version or "", "safety_backup_id": plan.safety_backup_id or ""})
    return plan


@op
def rollback_verify(
    context: OpExecutionContext, plan: RollbackPlan, settings: OpsSettings, locks: EnvironmentLocks
) -> RollbackPlan:
    with rollback_step(context, plan, settings, locks) as s:
        rollback.verify_rollback(
            s.env,
            plan,
            log=s.log,
            redact=s.redact,
            on_report=lambda report: record_health(context, s, report, "rollback"),
        )
    return plan


@op
def rollback_record(
    context: OpExecutionContext, plan: RollbackPlan, settings: OpsSettings, locks: EnvironmentLocks
) -> None:
    with step(context, load(settings), plan.environment, locks=locks, operation=f"rollback to {plan.backup_id}") as s:
        entry = rollback.record_rollback(s.env, plan)
        s.log.info(f"{s.env.name} rolled back to backup {plan.backup_id} ({plan.version})")
    context.add_output_metadata({"release": MetadataValue.json(entry.to_dict())})
