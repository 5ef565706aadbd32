"""What a release record needs from the Dagster run it happens in: who launched it and when it started."""

from dagster import OpExecutionContext

from ultra_ops.defs.shared.tags import launched_by
from ultra_ops.engine.clock import utc_timestamp


def run_origin(context: OpExecutionContext) -> tuple[str, str]:
    """(launched_by, started_at): from the run's tags (the CLI's user, a schedule, a sensor, else the
    UI) and the run's start as Dagster recorded it (ISO-8601 UTC)."""
    run = context.instance.get_run_by_id(context.run_id) or context.run
    start = context.instance.get_run_stats(context.run_id).start_time
    if start is None:
        record = context.instance.get_run_record_by_id(context.run_id)
        start = record.start_time if record is not None else None
    return launched_by(run.tags), utc_timestamp(start)
