"""Ops of the calendar domain."""

from dagster import OpExecutionContext, op

from ultra_ops.defs.calendar.config import ApproveConfig
from ultra_ops.defs.calendar.pending import log_pending
from ultra_ops.defs.shared.resources import OpsSettings
from ultra_ops.defs.shared.steps import environment_of, failures_as_dagster, load
from ultra_ops.engine.calendar.approvals import approve, parse_at
from ultra_ops.engine.clock import local_time


@op
def approve_release(context: OpExecutionContext, config: ApproveConfig, settings: OpsSettings) -> None:
    """A person's approval of a version for the environment, until it expires."""
    loaded = load(settings)
    with failures_as_dagster():
        approval = approve(loaded, environment_of(context), config.tag, config.by, valid_from=parse_at(config.at))
    context.log.info(
        f"{approval.version} approved for {approval.environment} by {approval.approved_by} "
        f"from {local_time(approval.approved_at, loaded.timezone)} "
        f"until {local_time(approval.expires_at, loaded.timezone)}"
    )
    context.add_output_metadata(
        {
            "version": approval.version,
            "approved_by": approval.approved_by,
            "expires_at": local_time(approval.expires_at, loaded.timezone),
        }
    )
    log_pending(context, loaded, context.log)  # the tick it waited for no longer shows as waiting
